/** A PUBLISH as the bridge needs it; `payload` is a view into the socket's buffer (no copy). */
export interface PublishFrame {
  topic: string
  payload: Buffer
  qos: 0 | 1 | 2
  messageId: number | undefined
  contentType: string | undefined
  /** A W3C `traceparent` the device sent as an MQTT v5 user property. */
  traceparent?: string
  /** The connection it came on (see MqttSession). */
  generation: number
}

/**
 * Splits a byte stream into MQTT frames. PUBLISH frames, nearly all the bridge receives, are decoded
 * here without copying their payload; every other frame is handed over whole for mqtt-packet to
 * parse. Bytes are copied only when a frame spans two socket reads.
 */
export class FrameSplitter {
  private rest: Buffer | undefined

  constructor(
    private readonly generation: number,
    private readonly protocolVersion: () => 4 | 5,
    private readonly onPublish: (frame: PublishFrame) => void,
    private readonly onOther: (frame: Buffer) => void,
  ) {}

  push(chunk: Buffer): void {
    let buf = this.rest ? Buffer.concat([this.rest, chunk]) : chunk
    this.rest = undefined
    let at = 0
    while (buf.length - at >= 2) {
      // Remaining length: a varint of 1 to 4 bytes after the first byte.
      let length = 0
      let multiplier = 1
      let i = at + 1
      let complete = false
      for (let n = 0; n < 4 && i < buf.length; n++, i++) {
        const byte = buf[i]!
        length += (byte & 0x7f) * multiplier
        multiplier *= 128
        if ((byte & 0x80) === 0) {
          complete = true
          i++
          break
        }
      }
      if (!complete) {
        if (i - at > 4) throw new Error('malformed remaining length')
        break
      }
      const end = i + length
      if (end > buf.length) break
      const header = buf[at]!
      if (header >> 4 === 3) this.onPublish(this.decodePublish(buf, header, i, end))
      else this.onOther(buf.subarray(at, end))
      at = end
    }
    if (at < buf.length) this.rest = Buffer.from(buf.subarray(at))
    buf = Buffer.alloc(0)
  }

  private decodePublish(buf: Buffer, header: number, start: number, end: number): PublishFrame {
    const qos = ((header >> 1) & 3) as 0 | 1 | 2
    let at = start
    const topicLength = buf.readUInt16BE(at)
    at += 2
    const topic = buf.toString('utf8', at, at + topicLength)
    at += topicLength
    let messageId: number | undefined
    if (qos > 0) {
      messageId = buf.readUInt16BE(at)
      at += 2
    }
    let contentType: string | undefined
    let traceparent: string | undefined
    if (this.protocolVersion() === 5) {
      const [propsLength, lengthBytes] = readVarint(buf, at)
      at += lengthBytes
      const propsEnd = at + propsLength
      while (at < propsEnd) {
        const id = buf[at++]!
        switch (id) {
          case 0x01: // payload format indicator
            at += 1
            break
          case 0x02: // message expiry interval
            at += 4
            break
          case 0x23: // topic alias
            at += 2
            break
          case 0x0b: {
            // subscription identifier
            at += readVarint(buf, at)[1]
            break
          }
          case 0x03: {
            const n = buf.readUInt16BE(at)
            contentType = buf.toString('utf8', at + 2, at + 2 + n)
            at += 2 + n
            break
          }
          case 0x08: // response topic
          case 0x09: // correlation data
            at += 2 + buf.readUInt16BE(at)
            break
          case 0x26: {
            // user property: two strings; `traceparent` continues the device's trace
            const keyLength = buf.readUInt16BE(at)
            const isTraceparent =
              keyLength === 11 && buf.toString('latin1', at + 2, at + 13) === 'traceparent'
            at += 2 + keyLength
            const valueLength = buf.readUInt16BE(at)
            if (isTraceparent) traceparent = buf.toString('latin1', at + 2, at + 2 + valueLength)
            at += 2 + valueLength
            break
          }
          default:
            throw new Error(`unexpected PUBLISH property 0x${id.toString(16)}`)
        }
      }
      at = propsEnd
    }
    return {
      topic,
      payload: buf.subarray(at, end),
      qos,
      messageId,
      contentType,
      traceparent,
      generation: this.generation,
    }
  }
}

function readVarint(buf: Buffer, at: number): [value: number, bytes: number] {
  let value = 0
  let multiplier = 1
  for (let n = 0; n < 4; n++) {
    const byte = buf[at + n]!
    value += (byte & 0x7f) * multiplier
    if ((byte & 0x80) === 0) return [value, n + 1]
    multiplier *= 128
  }
  throw new Error('malformed variable byte integer')
}
