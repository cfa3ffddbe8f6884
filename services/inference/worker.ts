// The asynchronous path: a durable pull consumer on `telemetry.raw.>` shared by every inference
// process; one scoring request per ReadingBatch (one ONNX run per model in it), the InferenceBatch
// published to `telemetry.inferred.<partition>` with a msgID derived from the batch (redeliveries
// are deduplicated by JetStream), then the ack. Failures nak with backoff and are retried without
// limit (an outage must not turn good readings into dead letters); a batch that does not decode is
// poison: terminated and kept on `telemetry.rejected.poison`.
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { timestampNow } from '@bufbuild/protobuf/wkt'
import {
  type Inference,
  InferenceBatchSchema,
  InferenceSchema,
  ReadingBatchSchema,
} from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { sleep } from '../common/health.js'
import type { Logger } from '../common/log.js'
import {
  BUS,
  ensureConsumer,
  inferredSubject,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  PoisonMessageError,
  runConsumer,
} from '../common/nats.js'
import type { InferenceMetrics } from './metrics.js'
import type { Interpretation } from './model/spec.js'
import type { ActiveModels, LoadedModel } from './models.js'
import type { ScoringPool } from './runtime/pool.js'
import { scoreItems } from './scorer.js'

export const WORKER_DURABLE = 'inference'

export interface WorkerOptions {
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

/** The fields an Inference shares with an InferResponse. */
export function inferenceFields(model: LoadedModel, result: Interpretation) {
  return {
    score: result.score,
    label: result.label,
    anomalies: result.anomalies,
    explain: result.explain,
    model: { name: model.spec.name, version: model.spec.version },
  }
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
    handle: async (msg: JsMsg) => {
      let batch: ReturnType<typeof fromBinary<typeof ReadingBatchSchema>>
      try {
        batch = fromBinary(ReadingBatchSchema, msg.data)
      } catch (err) {
        throw new PoisonMessageError(`not a ReadingBatch: ${(err as Error).message}`)
      }
      const readings = batch.readings
      const results = await scoreItems(
        models,
        pool,
        readings.map((r) => ({ deviceId: r.deviceId, site: r.meta.site, features: r.sensors })),
      )
      // Only while the fleet alias is being replaced: retry shortly, count nothing yet.
      if (results.some((r) => r.kind === 'no-model')) throw new Error('no model applies to some readings yet')
      const inferredAt = timestampNow()
      const inferences: Inference[] = []
      results.forEach((res, i) => {
        const r = readings[i]
        if (!r) return
        if (res.kind !== 'scored') {
          metrics.unscored.inc({ reason: 'missing_features' })
          return
        }
        metrics.scored.inc({ path: 'async', label: res.result.label })
        metrics.score.observe(res.result.score)
        inferences.push(
          create(InferenceSchema, {
            eventId: r.eventId,
            deviceId: r.deviceId,
            ts: r.ts,
            inferredAt,
            features: r.sensors,
            ...inferenceFields(res.model, res.result),
          }),
        )
      })
      if (inferences.length === 0) return
      const partition = Number(msg.subject.slice(msg.subject.lastIndexOf('.') + 1)) || 0
      const batchId = `inf-${batch.batchId || `seq-${msg.seq}`}`
      const out = create(InferenceBatchSchema, { batchId, inferences })
      await js.publish(inferredSubject(partition), toBinary(InferenceBatchSchema, out), { msgID: batchId })
    },
  })
}
