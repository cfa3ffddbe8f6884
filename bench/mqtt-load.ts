import net, { type Socket } from 'node:net'
import mqtt, { type Packet } from 'mqtt-packet'

/**
 * A lean MQTT load generator: it writes QoS1 PUBLISH frames itself (no client library per message)
 * and keeps a window of unacknowledged messages per connection, so it costs far less CPU than the
 * system it measures. The same generator feeds the bare-broker ceiling and the bridge run.
 */
export class LeanPublisher {
  private socket!: Socket
  private nextId = 1
  private inflight = 0
  private waiters: (() => void)[] = []
  acked = 0

  constructor(
    private readonly port: number,
    private readonly clientId: string,
    private readonly window = 2_000,
  ) {}

  async connect(): Promise<void> {
    this.socket = net.connect({ port: this.port, host: '127.0.0.1' })
    this.socket.setNoDelay(true)
    const parser = mqtt.parser({ protocolVersion: 4 })
    const connected = new Promise<void>((resolve, reject) => {
      parser.on('packet', (packet: Packet) => {
        if (packet.cmd === 'connack') {
          if ((packet.returnCode ?? 0) !== 0) reject(new Error(`connack ${packet.returnCode}`))
          else resolve()
        } else if (packet.cmd === 'puback') {
          this.inflight--
          this.acked++
          // Wake waiters only once half the window is free: fewer wake-ups, bigger writes.
          if (this.inflight <= this.window / 2 || this.inflight === 0) {
            const waiters = this.waiters.splice(0, this.waiters.length)
            for (const w of waiters) w()
          }
        }
      })
      this.socket.once('error', reject)
    })
    this.socket.on('data', (chunk) => parser.parse(chunk))
    this.socket.write(
      mqtt.generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clientId: this.clientId,
        clean: true,
        keepalive: 60,
      }),
    )
    await connected
  }

  /** Whether another message fits in the window now. */
  get ready(): boolean {
    return this.inflight < this.window
  }

  /** Resolves when the window has room again. */
  room(): Promise<void> {
    return this.ready ? Promise.resolve() : new Promise<void>((r) => this.waiters.push(r))
  }

  /** Sends one QoS1 PUBLISH; waits only when the window of unacknowledged messages is full. */
  async publish(topic: string, payload: Buffer): Promise<void> {
    while (this.inflight >= this.window) await new Promise<void>((r) => this.waiters.push(r))
    this.send(topic, payload)
  }

  /** Sends without checking the window (check `ready` first). */
  send(topic: string, payload: Buffer): void {
    this.inflight++
    const id = this.nextId
    this.nextId = id >= 65_535 ? 1 : id + 1
    this.socket.write(publishFrame(topic, payload, id))
  }

  /** Resolves when every message sent was acknowledged. */
  async drain(): Promise<void> {
    while (this.inflight > 0) await new Promise<void>((r) => this.waiters.push(r))
  }

  close(): void {
    this.socket.end(mqtt.generate({ cmd: 'disconnect' }))
  }
}

/** A QoS1 PUBLISH frame, built by hand: fixed header, topic, packet id, payload. */
export function publishFrame(topic: string, payload: Buffer, packetId: number): Buffer {
  const topicLength = Buffer.byteLength(topic)
  const remaining = 2 + topicLength + 2 + payload.length
  const lengthBytes: number[] = []
  let n = remaining
  do {
    let byte = n % 128
    n = Math.floor(n / 128)
    if (n > 0) byte |= 0x80
    lengthBytes.push(byte)
  } while (n > 0)
  const frame = Buffer.allocUnsafe(1 + lengthBytes.length + remaining)
  let at = 0
  frame[at++] = 0x32 // PUBLISH, QoS 1
  for (const b of lengthBytes) frame[at++] = b
  frame.writeUInt16BE(topicLength, at)
  at += 2
  at += frame.write(topic, at)
  frame.writeUInt16BE(packetId, at)
  at += 2
  payload.copy(frame, at)
  return frame
}

/** The seed's device payload for one reading; `seq` makes each one distinct. */
export function devicePayload(deviceId: string, seq: number, sentAtMs: number): Buffer {
  const t = (seq % 100) / 10
  return Buffer.from(
    `{"deviceId":"${deviceId}","ts":"${new Date(sentAtMs).toISOString()}","sensors":{"temp":${20 + t},"humidity":${55 + t},"vibration":${0.1 + t / 100}},"meta":{"fw":"1.0.7","site":"HYD-PLANT-2"},"seq":${seq}}`,
  )
}

/**
 * Publishes `total` readings from `devices` devices over `connections` connections: as fast as the
 * windows allow, or at `ratePerSec` (paced every 10 ms, the offered load of a fleet). Device d
 * sends readings seq 1, 2, … on `topic(<prefix>-<d>)`; each payload's `ts` is its send time, so an
 * observer can measure publish → stored latency from the reading alone.
 */
export async function runFleet(opts: {
  port: number
  devices: number
  total: number
  connections: number
  topic: (deviceId: string) => string
  prefix: string
  ratePerSec?: number
}): Promise<{ seconds: number; behindMs: number }> {
  const publishers = Array.from(
    { length: opts.connections },
    (_, i) => new LeanPublisher(opts.port, `${opts.prefix}-load-${i}`),
  )
  await Promise.all(publishers.map((p) => p.connect()))
  const topics = Array.from({ length: opts.devices }, (_, d) => opts.topic(`${opts.prefix}-${d}`))
  const started = process.hrtime.bigint()
  const startedMs = Date.now()
  const perConnection = Math.ceil(opts.total / opts.connections)
  const ratePerConnection = opts.ratePerSec ? opts.ratePerSec / opts.connections : undefined
  // How far the generator fell behind its schedule (paced runs): the broker could not take more.
  let behindMs = 0
  await Promise.all(
    publishers.map(async (publisher, c) => {
      const first = c * perConnection
      const last = Math.min(opts.total, first + perConnection)
      let i = first
      while (i < last) {
        await publisher.room()
        const now = Date.now()
        const due = ratePerConnection
          ? Math.min(last, first + Math.floor(((now - startedMs) / 1000) * ratePerConnection))
          : last
        while (i < due && publisher.ready) {
          // Readings go round the devices: device d's k-th reading is number k·devices + d.
          const device = i % opts.devices
          const seq = Math.floor(i / opts.devices) + 1
          publisher.send(topics[device]!, devicePayload(`${opts.prefix}-${device}`, seq, now))
          i++
        }
        if (ratePerConnection) {
          // Readings due but not sent (the window was full), in time at the offered rate.
          behindMs = Math.max(behindMs, ((due - i) / ratePerConnection) * 1000)
          if (i >= due && i < last) await new Promise((r) => setTimeout(r, 10))
        }
      }
      await publisher.drain()
    }),
  )
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  for (const p of publishers) p.close()
  return { seconds, behindMs: Math.max(0, behindMs) }
}
