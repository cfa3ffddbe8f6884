// Scores one ReadingBatch from its bytes to the bytes of its InferenceBatch: decode, route each
// reading to its model, one run per model, interpret, encode. Runs inside a scoring thread (so the
// service's event loop only moves bytes); pure apart from `run`, so it is tested without threads.
import {
  decodeForScoring,
  encodeAlert,
  encodeInferenceBatch,
  type InferenceFields,
  type ScoringReading,
} from '../../common/codec.js'
import {
  featureMatrix,
  type Interpretation,
  interpret,
  type ModelSpec,
  type ScoreOutputs,
} from '../model/spec.js'
import { type Routes, selectRoute } from '../routing.js'
import type { ModelBank } from './bank.js'

export interface RunnableModel {
  spec: ModelSpec
  run: (values: Float64Array, rows: number) => Promise<ScoreOutputs>
  /** The bank that also holds the model, under the same key (for batches with many models). */
  bank?: ModelBank
}

export interface BatchOutcome {
  /** The InferenceBatch to publish (null when nothing could be scored). */
  bytes: Uint8Array | null
  batchId: string
  labels: Record<'OK' | 'WARN' | 'ALERT', number>
  /** Readings lacking a feature their model needs (not scored, counted). */
  missing: number
  /** Readings no model applies to (the batch must be retried later). */
  noModel: number
  scores: Float64Array
  /** An Alert per WARN or ALERT reading, for `alerts.<deviceId>`. */
  alerts: { deviceId: string; bytes: Uint8Array }[]
}

/** Thrown for bytes that are not a ReadingBatch (the message is poison). */
export class UndecodableBatchError extends Error {
  override name = 'UndecodableBatchError'
}

/** The fields an Inference shares with an InferResponse. */
export function inferenceFields(spec: ModelSpec, result: Interpretation) {
  return {
    score: result.score,
    label: result.label,
    anomalies: result.anomalies,
    explain: result.explain,
    model: { name: spec.name, version: spec.version },
  }
}

export async function scoreReadingBatch(
  data: Uint8Array,
  fallbackId: string,
  inferredAtMs: number,
  routes: Routes<string>,
  canaryPercent: number,
  models: Map<string, RunnableModel>,
): Promise<BatchOutcome> {
  let batch: ReturnType<typeof decodeForScoring>
  try {
    batch = decodeForScoring(data)
  } catch (err) {
    throw new UndecodableBatchError(`not a ReadingBatch: ${(err as Error).message}`)
  }
  const readings = batch.readings
  const outcome: BatchOutcome = {
    bytes: null,
    batchId: `inf-${batch.batchId || fallbackId}`,
    labels: { OK: 0, WARN: 0, ALERT: 0 },
    missing: 0,
    noModel: 0,
    scores: new Float64Array(0),
    alerts: [],
  }
  const groups = new Map<string, number[]>()
  readings.forEach((r, i) => {
    const key = selectRoute(routes, r.deviceId, r.site, canaryPercent)
    const model = key === undefined ? undefined : models.get(key)
    if (!model || key === undefined) {
      outcome.noModel++
      return
    }
    if (model.spec.features.some((f) => typeof r.sensors[f] !== 'number')) {
      outcome.missing++
      return
    }
    let group = groups.get(key)
    if (!group) {
      group = []
      groups.set(key, group)
    }
    group.push(i)
  })
  if (outcome.noModel > 0) return outcome
  const results = new Array<InferenceFields | undefined>(readings.length)
  const inferredAt = {
    seconds: BigInt(Math.floor(inferredAtMs / 1000)),
    nanos: (inferredAtMs % 1000) * 1_000_000,
  }
  const scores: number[] = []
  for (const { models: members, run, features } of planRuns(groups, models)) {
    const f = features.length
    const indexes = members.flatMap((m) => m.indexes)
    const values = featureMatrix(
      features,
      indexes.map((i) => readings[i]?.sensors as Record<string, number>),
    )
    const out = await run(values, indexes.length)
    let row = 0
    for (const { spec, indexes: own } of members) {
      for (const readingIndex of own) {
        const r = readings[readingIndex] as ScoringReading
        const result = interpret(spec, out, row, values.subarray(row * f, (row + 1) * f))
        row++
        outcome.labels[result.label]++
        scores.push(result.score)
        const fields: InferenceFields = {
          eventId: '',
          eventIdBytes: r.eventIdBytes,
          deviceId: r.deviceId,
          tsBytes: r.tsBytes,
          inferredAt,
          features: r.sensors,
          ...inferenceFields(spec, result),
        }
        results[readingIndex] = fields
        if (result.label !== 'OK') outcome.alerts.push({ deviceId: r.deviceId, bytes: encodeAlert(fields) })
      }
    }
  }
  outcome.scores = Float64Array.from(scores)
  const inferences = results.filter((x): x is InferenceFields => x !== undefined)
  if (inferences.length > 0) outcome.bytes = encodeInferenceBatch(outcome.batchId, inferences)
  return outcome
}

interface PlannedRun {
  /** The models scored in the run, each with its readings; rows follow this order. */
  models: { spec: ModelSpec; indexes: number[] }[]
  features: string[]
  run: (values: Float64Array, rows: number) => Promise<ScoreOutputs>
}

/**
 * One run per model, except that the models of one bank are scored together in one run of the
 * bank graph when the batch has readings of more than one of them.
 */
function planRuns(groups: Map<string, number[]>, models: Map<string, RunnableModel>): PlannedRun[] {
  const runs: PlannedRun[] = []
  const banked = new Map<ModelBank, { key: string; model: RunnableModel; indexes: number[] }[]>()
  for (const [key, indexes] of groups) {
    const model = models.get(key) as RunnableModel
    const slot = model.bank?.slotOf(key)
    if (model.bank && slot !== undefined) {
      const members = banked.get(model.bank) ?? []
      members.push({ key, model, indexes })
      banked.set(model.bank, members)
    } else
      runs.push({ models: [{ spec: model.spec, indexes }], features: model.spec.features, run: model.run })
  }
  for (const [bank, members] of banked) {
    const first = members[0] as (typeof members)[number]
    if (members.length === 1) {
      runs.push({
        models: [{ spec: first.model.spec, indexes: first.indexes }],
        features: first.model.spec.features,
        run: first.model.run,
      })
      continue
    }
    runs.push({
      models: members.map((m) => ({ spec: m.model.spec, indexes: m.indexes })),
      features: first.model.spec.features,
      run: (values, rows) => {
        const slots = new BigInt64Array(rows)
        let row = 0
        for (const m of members) {
          slots.fill(BigInt(bank.slotOf(m.key) as number), row, row + m.indexes.length)
          row += m.indexes.length
        }
        return bank.run(bank, values, slots, rows)
      },
    })
  }
  return runs
}
