import net, { type Socket } from 'node:net'
import tls from 'node:tls'
import mqtt, { type IPublishPacket, type Packet } from 'mqtt-packet'
import { sleep } from '../common/health.js'
import type { Logger } from '../common/log.js'
import { FrameSplitter, type PublishFrame } from './frames.js'

/**
 * A message the broker delivered. Acknowledge QoS1 messages with `session.ack()` once stored; an ack
 * for an older connection (`generation`) is dropped, since the broker redelivers those.
 */
export type InboundMessage = PublishFrame

export interface MqttSessionOptions {
  url: string
  clientId: string
  username?: string
  password?: string
  /** TLS: CA to trust, and a client certificate and key for mTLS. */
  ca?: Buffer
  cert?: Buffer
  key?: Buffer
  keepaliveSec?: number
  /** How long the broker keeps the session (and its queued messages) while we are away (v5). */
  sessionExpirySec?: number
  /** Unacknowledged QoS1 messages the broker may send us at once (v5 Receive Maximum). */
  receiveMaximum?: number
  /** Subscribed with `$share/<group>/` first, plain where the broker refuses shared subscriptions. */
  topicFilter: string
  shareGroup?: string
  log: Logger
  onMessage: (msg: InboundMessage) => void
  onConnectionChange?: (connected: boolean) => void
}

/**
 * A lean MQTT client for the bridge, on mqtt-packet (mqtt.js's own parser). Unlike mqtt.js it
 * never acknowledges a message by itself: messages flow in as fast as the socket delivers them and
 * each QoS1 PUBACK is sent only when the bridge calls `ack()` — after JetStream stored the reading.
 * MQTT v5 with a persistent session first, 3.1.1 where the broker lacks v5; reconnects forever.
 */
export class MqttSession {
  private socket: Socket | undefined
  private generationCounter = 0
  private connected = false
  private stopping = false
  private paused = false
  protocolVersion: 4 | 5 = 5
  shared = true
  private readonly keepaliveSec: number
  private lastInbound = 0
  private pingTimer: NodeJS.Timeout | undefined
  private loop: Promise<void> | undefined
  private firstConnect: { resolve: () => void; reject: (err: Error) => void } | undefined
  private nextPacketId = 1
  private readonly pubacks = new Map<number, () => void>()

  constructor(private readonly opts: MqttSessionOptions) {
    this.keepaliveSec = opts.keepaliveSec ?? 30
  }

  get generation(): number {
    return this.generationCounter
  }

  get isConnected(): boolean {
    return this.connected
  }

  /** Connects, subscribes, and keeps reconnecting; resolves after the first subscription. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.firstConnect = { resolve, reject }
      this.loop = this.run()
    })
  }

  /** Sends the PUBACK of a QoS1 message, unless its connection is gone. */
  ack(msg: InboundMessage): void {
    this.ackAll([msg])
  }

  /** Acknowledges many messages in one write. */
  ackAll(msgs: InboundMessage[]): void {
    const socket = this.socket
    if (!socket || !this.connected) return
    // PUBACK is four bytes (type, remaining length 2, packet id); with reason code 0 MQTT v5 allows
    // the same short form. Written by hand: this runs once per reading.
    const frames = Buffer.allocUnsafe(msgs.length * 4)
    let at = 0
    for (const msg of msgs) {
      if (msg.qos === 0 || msg.messageId === undefined || msg.generation !== this.generationCounter) continue
      frames[at] = 0x40
      frames[at + 1] = 2
      frames.writeUInt16BE(msg.messageId, at + 2)
      at += 4
    }
    if (at > 0) socket.write(frames.subarray(0, at))
  }

  /** Stops reading from the broker (it queues for us) until `resume()`. */
  pause(): void {
    this.paused = true
    this.socket?.pause()
  }

  resume(): void {
    this.paused = false
    this.socket?.resume()
  }

  /** Publishes a message; QoS1 resolves when the broker acknowledged it. */
  publish(
    topic: string,
    payload: Buffer,
    qos: 0 | 1,
    properties?: IPublishPacket['properties'],
  ): Promise<void> {
    const socket = this.socket
    if (!socket || !this.connected) return Promise.reject(new Error('not connected to the MQTT broker'))
    const messageId = qos === 1 ? this.allocatePacketId() : undefined
    const packet: IPublishPacket = {
      cmd: 'publish',
      topic,
      payload,
      qos,
      dup: false,
      retain: false,
      ...(messageId !== undefined ? { messageId } : {}),
      ...(this.protocolVersion === 5 && properties ? { properties } : {}),
    }
    socket.write(mqtt.generate(packet, this.packetOpts()))
    if (messageId === undefined) return Promise.resolve()
    return new Promise((resolve) => this.pubacks.set(messageId, resolve))
  }

  async stop(): Promise<void> {
    this.stopping = true
    const socket = this.socket
    if (socket && this.connected) {
      socket.end(mqtt.generate({ cmd: 'disconnect' }, this.packetOpts()))
    }
    socket?.destroy()
    await this.loop
  }

  private allocatePacketId(): number {
    const id = this.nextPacketId
    this.nextPacketId = id >= 65535 ? 1 : id + 1
    return id
  }

  private packetOpts() {
    return { protocolVersion: this.protocolVersion }
  }

  private async run(): Promise<void> {
    let delay = 250
    while (!this.stopping) {
      try {
        await this.connectOnce()
        delay = 250
      } catch (err) {
        if (this.stopping) break
        const message = (err as Error).message
        if (this.firstConnect && /not authorized|bad user name or password|unauthorized/i.test(message)) {
          this.firstConnect.reject(err as Error)
          this.firstConnect = undefined
          return
        }
        this.opts.log.warn({ url: this.opts.url, err: message, retryInMs: delay }, 'mqtt connection failed')
      }
      if (this.stopping) break
      await sleep(delay)
      delay = Math.min(delay * 2, 5_000)
    }
  }

  /** One connection: resolves when it closes after having worked, rejects when it never did. */
  private connectOnce(): Promise<void> {
    const url = new URL(this.opts.url)
    const secure = url.protocol === 'mqtts:' || url.protocol === 'ssl:'
    const port = Number(url.port || (secure ? 8883 : 1883))
    const host = url.hostname
    return new Promise<void>((resolve, reject) => {
      const socket = secure
        ? tls.connect({
            host,
            port,
            ca: this.opts.ca,
            cert: this.opts.cert,
            key: this.opts.key,
            servername: host,
          })
        : net.connect({ host, port })
      socket.setNoDelay(true)
      const generation = ++this.generationCounter
      this.socket = socket
      const parser = mqtt.parser({ protocolVersion: this.protocolVersion })
      let established = false
      let triedVersion = this.protocolVersion

      const fail = (err: Error) => {
        socket.destroy()
        if (!established) reject(err)
      }
      socket.once(secure ? 'secureConnect' : 'connect', () => {
        triedVersion = this.protocolVersion
        socket.write(
          mqtt.generate(
            {
              cmd: 'connect',
              protocolId: 'MQTT',
              protocolVersion: this.protocolVersion,
              clientId: this.opts.clientId,
              clean: false,
              keepalive: this.keepaliveSec,
              ...(this.opts.username !== undefined ? { username: this.opts.username } : {}),
              ...(this.opts.password !== undefined ? { password: Buffer.from(this.opts.password) } : {}),
              ...(this.protocolVersion === 5
                ? {
                    properties: {
                      sessionExpiryInterval: this.opts.sessionExpirySec ?? 86_400,
                      receiveMaximum: this.opts.receiveMaximum ?? 65_535,
                    },
                  }
                : {}),
            },
            this.packetOpts(),
          ),
        )
      })
      const frames = new FrameSplitter(
        generation,
        () => this.protocolVersion,
        this.opts.onMessage,
        (frame) => parser.parse(frame),
      )
      socket.on('data', (chunk: Buffer) => {
        this.lastInbound = Date.now()
        try {
          frames.push(chunk)
        } catch (err) {
          fail(new Error(`bad packet from broker: ${(err as Error).message}`))
        }
      })
      parser.on('error', (err) => fail(new Error(`bad packet from broker: ${err.message}`)))
      parser.on('packet', (packet: Packet) => {
        switch (packet.cmd) {
          case 'connack': {
            const code = this.protocolVersion === 5 ? (packet.reasonCode ?? 0) : (packet.returnCode ?? 0)
            if (code !== 0) {
              if (this.protocolVersion === 5 && (code === 0x84 || code === 1)) {
                this.fallBackTo311()
                fail(new Error('broker does not speak MQTT v5; falling back to 3.1.1'))
                return
              }
              fail(new Error(connackError(this.protocolVersion, code)))
              return
            }
            this.subscribe(socket)
            return
          }
          case 'suback': {
            const granted = packet.granted[0]
            const refused = typeof granted === 'number' ? granted >= 0x80 : false
            if (refused && this.shared) {
              this.opts.log.info('broker refused the shared subscription; subscribing without $share')
              this.shared = false
              this.subscribe(socket)
              return
            }
            if (refused) {
              fail(new Error(`broker refused the subscription to ${this.opts.topicFilter}`))
              return
            }
            established = true
            this.connected = true
            this.opts.log.info(
              { url: this.opts.url, protocolVersion: this.protocolVersion, shared: this.shared },
              'mqtt subscribed',
            )
            this.opts.onConnectionChange?.(true)
            if (this.paused) socket.pause()
            this.startPing(socket)
            this.firstConnect?.resolve()
            this.firstConnect = undefined
            return
          }
          case 'puback': {
            const done = this.pubacks.get(packet.messageId ?? -1)
            if (done) {
              this.pubacks.delete(packet.messageId!)
              done()
            }
            return
          }
          case 'pingresp':
            return
          case 'disconnect':
            this.opts.log.warn({ reasonCode: packet.reasonCode }, 'broker disconnected us')
            socket.destroy()
            return
          default:
            return
        }
      })
      socket.on('error', (err) => {
        if (!established) fail(err)
        else this.opts.log.warn({ err: err.message }, 'mqtt socket error')
      })
      socket.once('close', () => {
        clearInterval(this.pingTimer)
        const was = this.connected
        this.connected = false
        if (was) this.opts.onConnectionChange?.(false)
        for (const done of this.pubacks.values()) done()
        this.pubacks.clear()
        if (established) {
          if (!this.stopping)
            this.opts.log.warn({ url: this.opts.url }, 'mqtt connection closed; reconnecting')
          resolve()
        } else {
          // A v5 CONNECT a 3.1.1-only broker hangs up on: try 3.1.1 next time.
          if (triedVersion === 5 && this.protocolVersion === 5) this.fallBackTo311()
          reject(new Error('connection closed before the subscription was made'))
        }
      })
    })
  }

  /**
   * A broker without MQTT v5 (the embedded one) is taken to lack shared subscriptions too: it would
   * accept `$share/…` as a plain filter that never matches, so subscribe without it.
   */
  private fallBackTo311(): void {
    this.protocolVersion = 4
    this.shared = false
    this.opts.log.info('broker lacks MQTT v5: using MQTT 3.1.1 and a plain subscription')
  }

  private subscribe(socket: Socket): void {
    const topic = this.shared
      ? `$share/${this.opts.shareGroup ?? 'vigil'}/${this.opts.topicFilter}`
      : this.opts.topicFilter
    socket.write(
      mqtt.generate(
        { cmd: 'subscribe', messageId: this.allocatePacketId(), subscriptions: [{ topic, qos: 1 }] },
        this.packetOpts(),
      ),
    )
  }

  private startPing(socket: Socket): void {
    clearInterval(this.pingTimer)
    const everyMs = (this.keepaliveSec * 1000) / 2
    this.pingTimer = setInterval(() => {
      // While paused we read nothing, PINGRESP included; silence then is ours, not the broker's.
      if (this.paused) this.lastInbound = Date.now()
      if (Date.now() - this.lastInbound > this.keepaliveSec * 1500) {
        this.opts.log.warn('mqtt broker silent past keepalive; reconnecting')
        socket.destroy()
        return
      }
      socket.write(mqtt.generate({ cmd: 'pingreq' }, this.packetOpts()))
    }, everyMs)
    this.pingTimer.unref()
  }
}

function connackError(version: 4 | 5, code: number): string {
  const v4: Record<number, string> = {
    1: 'unacceptable protocol version',
    2: 'client id rejected',
    3: 'server unavailable',
    4: 'bad user name or password',
    5: 'not authorized',
  }
  const v5: Record<number, string> = {
    133: 'client id rejected',
    134: 'bad user name or password',
    135: 'not authorized',
    136: 'server unavailable',
    138: 'banned',
  }
  return `broker refused the connection: ${(version === 5 ? v5 : v4)[code] ?? `code ${code}`}`
}
