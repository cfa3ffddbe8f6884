import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import type { JetStreamClient } from '@nats-io/jetstream'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { Reading } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { encodeReadingBatch } from './codec.js'
import type { CommonConfig, EnvReader } from './config.js'
import type { Logger } from './log.js'
import { registeredOnce } from './metrics.js'
import { type MsgHdrs, partitionOf, rawSubject } from './nats.js'
import type { ServiceKit } from './service.js'
import { contextOf, headersFor, type SpanContext, SpanKind, startSpan } from './tracing.js'

/** Batch size and linger time, read the same way by every producer (bridge, ingest). */
export function readBatchConfig(r: EnvReader): { batchMax: number; batchLingerMs: number } {
  return {
    batchMax: r.int('VIGIL_BATCH_MAX', 500, 1, 10_000),
    batchLingerMs: r.int('VIGIL_BATCH_LINGER_MS', 25, 0, 1_000),
  }
}

/** Called once per reading: without an error when JetStream stored its batch. */
export type StoredCallback = (err?: Error) => void

export interface BatcherOptions {
  js: JetStreamClient
  log: Logger
  registry: Registry
  partitions: number
  /** Who makes the batches (goes into ReadingBatch.source and batch ids). */
  source: string
  /** Readings per batch at most (default 500). */
  maxBatch?: number
  /** How long the first reading of a batch may wait for more (default 5 ms). */
  lingerMs?: number
  /** Give up on a batch after retrying this long (default: never — the bridge never drops). */
  giveUpAfterMs?: number
  /** Timeout of one publish attempt (default 5 s). */
  publishTimeoutMs?: number
}

interface Pending {
  readings: Reading[]
  callbacks: StoredCallback[]
  /** The readings' spans (tracing on). */
  spans: SpanContext[]
}

/** Links from a batch's span to its readings, at most (the rest are counted in an attribute). */
const MAX_LINKS = 128

/**
 * Collects readings per partition and publishes each partition's readings as one `ReadingBatch`
 * with `msgID = batch_id`, when the batch is full or its linger time is up. A failed publish is
 * retried with the same id (JetStream stores it once) and backoff; callbacks run only after
 * JetStream acknowledged, so callers ack their senders only for what is stored.
 */
export class ReadingBatcher {
  private readonly maxBatch: number
  private readonly lingerMs: number
  private readonly partitions: Pending[]
  private readonly idPrefix = `${randomBytes(6).toString('hex')}`
  private counter = 0
  private inFlight = 0
  private inFlightBatches = new Set<Promise<void>>()
  private closed = false
  private readonly metrics: ReturnType<typeof busMetrics>

  constructor(private readonly opts: BatcherOptions) {
    this.maxBatch = opts.maxBatch ?? 500
    this.lingerMs = opts.lingerMs ?? 5
    this.partitions = Array.from({ length: opts.partitions }, () => ({
      readings: [],
      callbacks: [],
      spans: [],
    }))
    this.metrics = busMetrics(opts.registry)
  }

  /** Readings accepted but not yet stored (waiting in a batch or being published). */
  get pending(): number {
    return this.inFlight
  }

  /** Adds a canonical reading; `done` runs once its batch is stored (or given up on). */
  add(reading: Reading, done: StoredCallback, spanContext?: SpanContext): void {
    if (this.closed) {
      done(new Error('the batcher is closed'))
      return
    }
    const p = partitionOf(reading.deviceId, this.partitions.length)
    const part = this.partitions[p]!
    part.readings.push(reading)
    part.callbacks.push(done)
    if (spanContext) part.spans.push(spanContext)
    this.inFlight++
    if (part.readings.length >= this.maxBatch) this.flushPartition(p)
    else this.timer ??= setTimeout(this.flushAll, this.lingerMs)
  }

  /** Adds a reading and resolves when it is stored. */
  store(reading: Reading, spanContext?: SpanContext): Promise<void> {
    return new Promise((resolve, reject) =>
      this.add(reading, (err) => (err ? reject(err) : resolve()), spanContext),
    )
  }

  /**
   * One linger timer for all partitions: when it fires every partition's batch goes, so their
   * publishes leave in one socket write instead of one write per partition (measured: the bridge's
   * writes to nats-server were a tenth of its CPU). A batch may so wait less than the linger time,
   * never more.
   */
  private timer: NodeJS.Timeout | undefined

  private readonly flushAll = (): void => {
    clearTimeout(this.timer)
    this.timer = undefined
    for (let p = 0; p < this.partitions.length; p++) this.flushPartition(p)
  }

  /** Publishes everything waiting now and resolves when every batch in flight is stored. */
  async flush(): Promise<void> {
    this.flushAll()
    while (this.inFlightBatches.size > 0) await Promise.allSettled([...this.inFlightBatches])
  }

  /** Stops taking readings, then flushes. */
  async close(): Promise<void> {
    this.closed = true
    await this.flush()
  }

  private flushPartition(p: number): void {
    const part = this.partitions[p]!
    if (part.readings.length === 0) return
    const readings = part.readings
    const callbacks = part.callbacks
    const spans = part.spans
    part.readings = []
    part.callbacks = []
    part.spans = []
    this.metrics.pending.set(this.inFlight)
    const batchId = `${this.opts.source}-${this.idPrefix}-${(this.counter++).toString(36)}`
    const data = encodeReadingBatch(batchId, readings, this.opts.source)
    // Tracing (when on): the batch's span is a child of its first reading's and links to the others.
    const span = startSpan('bus.publish ReadingBatch', {
      kind: SpanKind.PRODUCER,
      parent: contextOf(spans[0]),
      links: spans.slice(1, MAX_LINKS).map((context) => ({ context })),
      attributes: { 'vigil.batch_id': batchId, 'vigil.readings': readings.length },
    })
    const publishing = this.publish(rawSubject(p), batchId, data, readings.length, headersFor(span)).then(
      () => settle(undefined),
      (err: Error) => settle(err),
    )
    void publishing.finally(() => span?.end())
    const settle = (err: Error | undefined) => {
      this.inFlight -= callbacks.length
      this.metrics.pending.set(this.inFlight)
      for (const cb of callbacks) cb(err)
    }
    this.inFlightBatches.add(publishing)
    void publishing.finally(() => this.inFlightBatches.delete(publishing))
  }

  private async publish(
    subject: string,
    batchId: string,
    data: Uint8Array,
    size: number,
    headers?: MsgHdrs,
  ): Promise<void> {
    const started = Date.now()
    let delay = 50
    for (let attempt = 1; ; attempt++) {
      const t0 = process.hrtime.bigint()
      try {
        await this.opts.js.publish(subject, data, {
          msgID: batchId,
          ...(headers ? { headers } : {}),
          timeout: this.opts.publishTimeoutMs ?? 5_000,
        })
        this.metrics.publishSeconds.observe(Number(process.hrtime.bigint() - t0) / 1e9)
        this.metrics.batches.inc()
        this.metrics.readings.inc(size)
        this.metrics.batchSize.observe(size)
        return
      } catch (err) {
        this.metrics.failures.inc()
        const giveUp = this.opts.giveUpAfterMs
        if (giveUp !== undefined && Date.now() - started + delay > giveUp) {
          throw new Error(`JetStream did not store batch ${batchId}: ${(err as Error).message}`)
        }
        if (attempt === 1 || attempt % 20 === 0) {
          this.opts.log.warn(
            { subject, batchId, attempt, err: (err as Error).message },
            'publish failed; retrying',
          )
        }
        await new Promise((r) => setTimeout(r, delay))
        delay = Math.min(delay * 2, 2_000)
      }
    }
  }
}

/** The bus producer metrics (bridge and ingest may share one registry, and one series). */
function busMetrics(registry: Registry) {
  return {
    batches: registeredOnce(
      registry,
      'vigil_bus_batches_published_total',
      () =>
        new Counter({
          name: 'vigil_bus_batches_published_total',
          help: 'ReadingBatch messages JetStream acknowledged.',
          registers: [registry],
        }),
    ),
    readings: registeredOnce(
      registry,
      'vigil_bus_readings_published_total',
      () =>
        new Counter({
          name: 'vigil_bus_readings_published_total',
          help: 'Readings in acknowledged batches.',
          registers: [registry],
        }),
    ),
    failures: registeredOnce(
      registry,
      'vigil_bus_publish_failures_total',
      () =>
        new Counter({
          name: 'vigil_bus_publish_failures_total',
          help: 'Batch publish attempts that failed (and were retried or given up).',
          registers: [registry],
        }),
    ),
    batchSize: registeredOnce(
      registry,
      'vigil_bus_batch_readings',
      () =>
        new Histogram({
          name: 'vigil_bus_batch_readings',
          help: 'Readings per published batch.',
          buckets: [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500],
          registers: [registry],
        }),
    ),
    publishSeconds: registeredOnce(
      registry,
      'vigil_bus_publish_seconds',
      () =>
        new Histogram({
          name: 'vigil_bus_publish_seconds',
          help: 'Time from publishing a batch to its JetStream acknowledgement.',
          buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
          registers: [registry],
        }),
    ),
    pending: registeredOnce(
      registry,
      'vigil_bus_pending_readings',
      () =>
        new Gauge({
          name: 'vigil_bus_pending_readings',
          help: 'Readings accepted but not yet acknowledged by JetStream.',
          registers: [registry],
        }),
    ),
  }
}

/** The batcher of a producing service (`bridge`, `ingest`), configured from its kit. */
export function producerBatcher(
  kit: ServiceKit<CommonConfig & { batchMax: number; batchLingerMs: number }>,
  js: JetStreamClient,
  opts: { giveUpAfterMs?: number } = {},
): ReadingBatcher {
  return new ReadingBatcher({
    js,
    log: kit.log,
    registry: kit.metrics.registry,
    partitions: kit.config.partitions,
    source: `${kit.config.service}/${hostname()}`,
    maxBatch: kit.config.batchMax,
    lingerMs: kit.config.batchLingerMs,
    ...opts,
  })
}
