import { type Timestamp, timestampFromMs } from '@bufbuild/protobuf/wkt'
import type { JetStreamClient } from '@nats-io/jetstream'
import { Counter, Gauge, type Registry } from 'prom-client'
import { RejectReason } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import type { ReadingBatcher } from '../common/batcher.js'
import type { Logger } from '../common/log.js'
import { rejectReasonToken } from '../common/nats.js'
import type { RateLimiter } from '../common/rate-limit.js'
import { canonicalizeReading, decodeReading, deviceIdFromTopic, type Refusal } from '../common/readings.js'
import { keepRejected, rejectedCounter } from '../common/rejections.js'
import { contextFromTraceparent, SpanKind, startSpan } from '../common/tracing.js'
import type { InboundMessage, MqttSession } from './mqtt-session.js'

const NO_PAYLOAD = Buffer.alloc(0)

export interface BridgeDeps {
  session: Pick<MqttSession, 'ackAll' | 'pause' | 'resume'>
  batcher: ReadingBatcher
  js: JetStreamClient
  rateLimiter: RateLimiter
  log: Logger
  registry: Registry
  /** Readings held (not yet stored) above which the bridge stops reading from the broker. */
  maxPending: number
}

/**
 * MQTT → JetStream. Every message is decoded, checked against its topic, rate-limited, validated and
 * canonicalized, then batched; its PUBACK is sent only after JetStream stored the batch (or, for a
 * refused message, the dead letter). While too much is held the bridge stops reading from the
 * broker, which keeps the messages queued for it: memory stays bounded and nothing is dropped.
 */
export class Bridge {
  private readonly acks: InboundMessage[] = []
  private ackScheduled = false
  private storedSinceFlush = 0
  private rejectedSinceFlush = 0
  private held = 0
  private paused = false
  private readonly received: Counter<'result'>
  private readonly rejected: Counter<'reason' | 'source'>

  constructor(private readonly deps: BridgeDeps) {
    this.received = new Counter({
      name: 'vigil_bridge_messages_total',
      help: 'MQTT messages the bridge handled, by result (stored or rejected).',
      labelNames: ['result'],
      registers: [deps.registry],
    })
    this.rejected = rejectedCounter(deps.registry)
    const bridge = this
    new Gauge({
      name: 'vigil_bridge_held_messages',
      help: 'MQTT messages received and not yet acknowledged (waiting for JetStream).',
      registers: [deps.registry],
      // Read at scrape time: during an outage no acks flow, and a value set on each ack would be stale.
      collect() {
        this.set(bridge.held)
      },
    })
  }

  /** The session's message handler: never blocks, never throws. */
  readonly onMessage = (msg: InboundMessage): void => {
    this.hold()
    const topicDeviceId = deviceIdFromTopic(msg.topic)
    if (topicDeviceId === undefined) {
      this.refuse(msg, {
        reason: RejectReason.TOPIC_MISMATCH,
        detail: `unexpected topic ${msg.topic}`,
        violations: [],
      })
      return
    }
    if (!this.deps.rateLimiter.take(topicDeviceId)) {
      this.refuse(msg, {
        reason: RejectReason.RATE_LIMITED,
        detail: `device ${topicDeviceId} is over its rate limit`,
        violations: [],
        deviceId: topicDeviceId,
      })
      return
    }
    const decoded = decodeReading(msg.payload, msg.contentType)
    if (!decoded.ok) {
      this.refuse(msg, { ...decoded.refusal, deviceId: decoded.refusal.deviceId ?? topicDeviceId })
      return
    }
    const refusal = canonicalizeReading(decoded.reading, this.receivedAt(), { topicDeviceId })
    if (refusal) {
      this.refuse(msg, refusal)
      return
    }
    // The payload is a view into the socket's buffer; holding it until the JetStream ack would keep
    // whole socket reads alive. Only the packet id is needed from here on.
    msg.payload = NO_PAYLOAD
    // Tracing (when on): the reading's span, continuing the device's trace when it sent one.
    const span = startSpan('mqtt.receive', {
      kind: SpanKind.CONSUMER,
      parent: contextFromTraceparent(msg.traceparent),
      attributes: { 'vigil.device_id': decoded.reading.deviceId, 'vigil.event_id': decoded.reading.eventId },
    })
    span?.end()
    this.deps.batcher.add(
      decoded.reading,
      (err) => {
        // Without giveUpAfterMs the batcher retries until stored; an error means it was closed, and
        // then the message stays unacknowledged and the broker redelivers it.
        if (err) {
          this.release()
          return
        }
        this.ack(msg, 'stored')
      },
      span?.spanContext(),
    )
  }

  private lastReceivedAt: Timestamp | undefined
  private lastReceivedMs = 0

  /** Now, as a Timestamp shared by every reading received in the same millisecond (never mutated). */
  private receivedAt(): Timestamp {
    const ms = Date.now()
    if (ms !== this.lastReceivedMs || !this.lastReceivedAt) {
      this.lastReceivedMs = ms
      this.lastReceivedAt = timestampFromMs(ms)
    }
    return this.lastReceivedAt
  }

  private refuse(msg: InboundMessage, refusal: Refusal): void {
    this.rejected.inc({ reason: rejectReasonToken(refusal.reason), source: 'mqtt' })
    const kept = keepRejected(this.deps.js, {
      source: `mqtt:${msg.topic}`,
      raw: msg.payload,
      reason: refusal.reason,
      detail: refusal.detail,
      violations: refusal.violations,
      ...(refusal.deviceId ? { deviceId: refusal.deviceId } : {}),
    })
    // keepRejected copied what it keeps before its first await.
    msg.payload = NO_PAYLOAD
    kept.then(
      () => {
        this.ack(msg, 'rejected')
      },
      (err: Error) => {
        // Not kept, so not acknowledged: the broker redelivers after we reconnect.
        this.deps.log.warn({ err: err.message, topic: msg.topic }, 'could not keep a rejected message')
        this.release()
      },
    )
  }

  private hold(): void {
    this.held++
    if (!this.paused && this.held >= this.deps.maxPending) {
      this.paused = true
      this.deps.session.pause()
      this.deps.log.warn({ held: this.held }, 'holding too many messages: pausing MQTT intake')
    }
  }

  private release(): void {
    this.held--
    if (this.paused && this.held <= this.deps.maxPending / 2) {
      this.paused = false
      this.deps.session.resume()
      this.deps.log.info({ held: this.held }, 'resuming MQTT intake')
    }
  }

  private ack(msg: InboundMessage, result: 'stored' | 'rejected'): void {
    this.acks.push(msg)
    if (result === 'stored') this.storedSinceFlush++
    else this.rejectedSinceFlush++
    this.release()
    if (!this.ackScheduled) {
      this.ackScheduled = true
      setImmediate(this.flushAcks)
    }
  }

  private readonly flushAcks = (): void => {
    this.ackScheduled = false
    const batch = this.acks.splice(0, this.acks.length)
    this.deps.session.ackAll(batch)
    // Metrics once per flush, not once per message: label lookups cost more than the counting.
    if (this.storedSinceFlush > 0) this.received.inc({ result: 'stored' }, this.storedSinceFlush)
    if (this.rejectedSinceFlush > 0) this.received.inc({ result: 'rejected' }, this.rejectedSinceFlush)
    this.storedSinceFlush = 0
    this.rejectedSinceFlush = 0
  }

  get heldMessages(): number {
    return this.held
  }
}
