// The asynchronous path: a durable pull consumer on `telemetry.raw.>` shared by every inference
// process; one scoring request per ReadingBatch (one ONNX run per model in it), the InferenceBatch
// published to `telemetry.inferred.<partition>` with a msgID derived from the batch (redeliveries
// are deduplicated by JetStream), then the ack. Failures nak with backoff and are retried without
// limit (an outage must not turn good readings into dead letters); a batch that does not decode is
// poison: terminated and kept on `telemetry.rejected.poison`.
import { sleep } from '../common/health.js'
import type { Logger } from '../common/log.js'
import {
  alertSubject,
  BUS,
  ensureConsumer,
  inferredSubject,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  type NatsConnection,
  PoisonMessageError,
  runConsumer,
} from '../common/nats.js'
import { contextFromHeaders, headersFor, inSpan, type Span, SpanKind } from '../common/tracing.js'
import type { InferenceMetrics } from './metrics.js'
import type { ActiveModels } from './models.js'
import { UndecodableBatchError } from './runtime/batch.js'
import type { ScoringPool } from './runtime/pool.js'

export const WORKER_DURABLE = 'inference'

export interface WorkerOptions {
  nc: NatsConnection
  js: JetStreamClient
  jsm: JetStreamManager
  models: ActiveModels
  pool: ScoringPool
  log: Logger
  metrics: InferenceMetrics
  signal: AbortSignal
  /** Batches handled at once (default 4). */
  concurrency?: number
}

/** Consumes until `signal` aborts; starts once a fleet model serves (the bootstrap makes one). */
export async function runInferenceWorker(opts: WorkerOptions): Promise<void> {
  const { js, log, models, pool, metrics, signal } = opts
  const concurrency = opts.concurrency ?? 4
  await ensureConsumer(opts.jsm, BUS.streams.telemetry, WORKER_DURABLE, {
    maxDeliver: -1,
    maxAckPending: concurrency * 8,
  })
  if (!models.hasFleetModel) {
    log.info('async worker waits for a fleet model before it consumes telemetry')
    while (!models.hasFleetModel && !signal.aborted) await sleep(250, signal).catch(() => undefined)
  }
  if (signal.aborted) return
  log.info({ durable: WORKER_DURABLE, concurrency }, 'async worker consuming telemetry.raw.>')
  await runConsumer({
    js,
    stream: BUS.streams.telemetry,
    durable: WORKER_DURABLE,
    log,
    signal,
    concurrency,
    prefetch: concurrency * 2,
    maxDeliver: Number.POSITIVE_INFINITY,
    handle: (msg: JsMsg) =>
      // Tracing (when on): continues the batch's trace from its headers.
      inSpan(
        'inference.score ReadingBatch',
        {
          parent: contextFromHeaders(msg.headers),
          kind: SpanKind.CONSUMER,
          attributes: { 'messaging.message.id': String(msg.seq) },
        },
        (span) => scoreOne(msg, span),
      ),
  })

  async function scoreOne(msg: JsMsg, span: Span | undefined): Promise<void> {
    let outcome: Awaited<ReturnType<ScoringPool['scoreBatch']>>
    try {
      outcome = await pool.scoreBatch(msg.data, `seq-${msg.seq}`, Date.now())
    } catch (err) {
      if (err instanceof UndecodableBatchError) throw new PoisonMessageError(err.message)
      throw err
    }
    // Only while the fleet alias is being replaced: retry shortly, count nothing yet.
    if (outcome.noModel > 0) throw new Error(`no model applies to ${outcome.noModel} readings yet`)
    for (const [label, n] of Object.entries(outcome.labels))
      if (n > 0) metrics.scored.inc({ path: 'async', label }, n)
    if (outcome.missing > 0) metrics.unscored.inc({ reason: 'missing_features' }, outcome.missing)
    for (const score of outcome.scores) metrics.score.observe(score)
    if (!outcome.bytes) return
    const partition = Number(msg.subject.slice(msg.subject.lastIndexOf('.') + 1)) || 0
    const headers = headersFor(span)
    await js.publish(inferredSubject(partition), outcome.bytes, {
      msgID: outcome.batchId,
      ...(headers ? { headers } : {}),
    })
    // Live notifications (Watch follows them); the inference itself is what the store keeps. A
    // redelivered batch alerts again.
    for (const alert of outcome.alerts) opts.nc.publish(alertSubject(alert.deviceId), alert.bytes)
  }
}
