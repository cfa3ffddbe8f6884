// Fits a model from normal data: standardize, principal components (ml-pca), then the control
// limits of Hotelling's T² (F distribution) and of Q, the squared prediction error (Jackson and
// Mudholkar), never below what the training data itself reaches at the same confidence. Gross
// outliers in the training window (a stuck sensor, an anomaly during bootstrap) are trimmed and the
// model refit once, so a few bad rows do not widen the limits for everyone.
import { PCA } from 'ml-pca'
import { scoreReference } from './reference.js'
import { MODEL_FORMAT, type ModelScopeName, type ModelSpec, modelName } from './spec.js'
import { fQuantile, normalQuantile, quantile } from './stats.js'

export interface TrainingSet {
  features: string[]
  /** Row-major values, rows × features. */
  values: Float64Array
  rows: number
  /** First and last timestamps of the window (ms). */
  startMs: number
  endMs: number
  /** Where the data came from, for the model's metadata (e.g. `clickhouse`, `file:x.jsonl`, `bootstrap`). */
  source: string
}

export interface TrainOptions {
  scope: ModelScopeName
  scopeKey?: string
  /** Share of the variance the kept components explain (default 0.9). */
  varianceToKeep?: number
  /** Confidence of the control limits (default 0.999: about one false alarm per thousand normal readings). */
  confidence?: number
  /** Quantile of the per-feature training levels (default 0.99). */
  levelQuantile?: number
  /** Score thresholds (defaults 0.5, at the limits, and 0.75, three times past them). */
  warn?: number
  alert?: number
  /** Trim gross outliers and refit (default true). */
  trim?: boolean
  /** Fewest rows accepted (default 50, and always more than twice the features). */
  minRows?: number
  now?: Date
}

/** Training cannot produce a sound model from this data; the message says why and what to do. */
export class TrainingError extends Error {
  override name = 'TrainingError'
}

/** Sensors present in at least `presence` of the readings, sorted by name. */
export function chooseFeatures(readings: { sensors: Record<string, number> }[], presence = 0.9): string[] {
  const counts = new Map<string, number>()
  for (const r of readings)
    for (const name of Object.keys(r.sensors)) counts.set(name, (counts.get(name) ?? 0) + 1)
  return [...counts]
    .filter(([, n]) => n >= presence * readings.length)
    .map(([name]) => name)
    .sort()
}

/** A training set from readings: the chosen features, rows lacking any of them left out. */
export function trainingSet(
  readings: { sensors: Record<string, number>; tsMs: number }[],
  source: string,
  features = chooseFeatures(readings),
): TrainingSet {
  const values: number[] = []
  let rows = 0
  let startMs = Number.POSITIVE_INFINITY
  let endMs = Number.NEGATIVE_INFINITY
  for (const r of readings) {
    const row = features.map((f) => r.sensors[f])
    if (row.some((v) => v === undefined || !Number.isFinite(v))) continue
    values.push(...(row as number[]))
    rows++
    startMs = Math.min(startMs, r.tsMs)
    endMs = Math.max(endMs, r.tsMs)
  }
  return { features, values: Float64Array.from(values), rows, startMs, endMs, source }
}

export function trainModel(set: TrainingSet, opts: TrainOptions): ModelSpec {
  const f = set.features.length
  const minRows = Math.max(opts.minRows ?? 50, 2 * f + 2)
  if (f < 2)
    throw new TrainingError(
      `a model needs at least 2 features; the data has ${f} (${set.features.join(', ')})`,
    )
  if (set.rows < minRows)
    throw new TrainingError(`a model needs at least ${minRows} complete rows; the data has ${set.rows}`)
  const confidence = opts.confidence ?? 0.999
  let values = set.values
  let rows = set.rows
  let trimmed = 0
  // Up to three passes: fit with the theoretical limits only, drop rows well past them (at most 5%
  // of the window in all, the worst first), refit. Then the final fit on what is left.
  for (let pass = 0; opts.trim !== false && pass < 3; pass++) {
    const trial = fit(set, values, rows, opts, confidence, false)
    const out = scoreReference(trial, values, rows)
    const budget = Math.floor(set.rows * 0.05) - trimmed
    const worst = Array.from(out.score.keys())
      .filter(
        (i) => (out.spe[i] as number) > 1.5 * trial.speLimit || (out.t2[i] as number) > 1.5 * trial.t2Limit,
      )
      .sort((a, b) => (out.score[b] as number) - (out.score[a] as number))
      .slice(0, Math.max(0, budget))
    if (worst.length === 0) break
    const drop = new Set(worst)
    const kept = new Float64Array((rows - drop.size) * f)
    let k = 0
    for (let i = 0; i < rows; i++) {
      if (drop.has(i)) continue
      kept.set(values.subarray(i * f, (i + 1) * f), k * f)
      k++
    }
    values = kept
    rows = k
    trimmed += drop.size
  }
  const spec = fit(set, values, rows, opts, confidence, true)
  spec.training.trimmedRows = trimmed
  spec.metrics.trimmed_rows = trimmed
  return spec
}

function fit(
  set: TrainingSet,
  values: Float64Array,
  n: number,
  opts: TrainOptions,
  confidence: number,
  empirical: boolean,
): ModelSpec {
  const f = set.features.length
  const mean = new Array<number>(f).fill(0)
  const scale = new Array<number>(f).fill(0)
  for (let i = 0; i < n; i++)
    for (let j = 0; j < f; j++) mean[j] = (mean[j] as number) + (values[i * f + j] as number) / n
  for (let i = 0; i < n; i++)
    for (let j = 0; j < f; j++)
      scale[j] = (scale[j] as number) + ((values[i * f + j] as number) - (mean[j] as number)) ** 2
  const constantFeatures: string[] = []
  for (let j = 0; j < f; j++) {
    const sd = Math.sqrt((scale[j] as number) / (n - 1))
    const m = Math.abs(mean[j] as number)
    if (sd <= 1e-9 * Math.max(1, m)) {
      // A constant feature: a change of 1% of its magnitude (at least 0.001) weighs like one
      // standard deviation, so a sensor that never moved and suddenly does is noticed.
      scale[j] = Math.max(0.01 * m, 1e-3)
      constantFeatures.push(set.features[j] as string)
    } else scale[j] = sd
  }
  const z: number[][] = []
  for (let i = 0; i < n; i++) {
    const row = new Array<number>(f)
    for (let j = 0; j < f; j++)
      row[j] = ((values[i * f + j] as number) - (mean[j] as number)) / (scale[j] as number)
    z.push(row)
  }
  const pca = new PCA(z, { center: false, scale: false })
  const all = pca.getEigenvalues().map((v) => Math.max(v, 0))
  while (all.length < f) all.push(0)
  const total = all.reduce((a, b) => a + b, 0) || 1
  const keep = opts.varianceToKeep ?? 0.9
  let k = 0
  let cumulative = 0
  while (k < f - 1 && cumulative / total < keep) cumulative += all[k++] as number
  const floor = 1e-9 * total
  const eigenvalues = all.slice(0, k).map((v) => Math.max(v, floor))
  const residualEigenvalues = all.slice(k)
  const vectors = pca.getEigenvectors()
  const loadings: number[][] = []
  for (let j = 0; j < f; j++) {
    const row: number[] = []
    for (let c = 0; c < k; c++) row.push(vectors.get(j, c))
    loadings.push(row)
  }

  const t2Theory = ((k * (n - 1) * (n + 1)) / (n * (n - k))) * fQuantile(confidence, k, n - k)
  const speTheory = jacksonMudholkar(residualEigenvalues, confidence, total)
  const spec: ModelSpec = {
    format: MODEL_FORMAT,
    name: modelName(opts.scope, opts.scopeKey),
    version: 0,
    scope: opts.scope,
    scopeKey: opts.scope === 'fleet' ? '' : (opts.scopeKey ?? ''),
    features: [...set.features],
    mean,
    scale,
    constantFeatures,
    loadings,
    eigenvalues,
    residualEigenvalues,
    speLimit: speTheory,
    t2Limit: t2Theory,
    confidence,
    levels: { residual: [], z: [], quantile: opts.levelQuantile ?? 0.99 },
    thresholds: { warn: opts.warn ?? 0.5, alert: opts.alert ?? 0.75 },
    training: {
      rows: n,
      trimmedRows: 0,
      start: new Date(set.startMs).toISOString(),
      end: new Date(set.endMs).toISOString(),
      source: set.source,
    },
    metrics: {},
    createdAt: (opts.now ?? new Date()).toISOString(),
  }
  // Limits never below what the training data reaches at the same confidence (real sensors are
  // rarely Gaussian), then the per-feature levels.
  const out = scoreReference(spec, values, n)
  if (empirical) {
    spec.speLimit = Math.max(speTheory, quantile(out.spe, confidence))
    spec.t2Limit = Math.max(t2Theory, quantile(out.t2, confidence))
  }
  const q = spec.levels.quantile
  for (let j = 0; j < f; j++) {
    const residual = new Float64Array(n)
    const zz = new Float64Array(n)
    for (let i = 0; i < n; i++) {
      residual[i] = out.speParts[i * f + j] as number
      zz[i] = ((z[i] as number[])[j] as number) ** 2
    }
    spec.levels.residual.push(Math.max(quantile(residual, q), (0.1 * spec.speLimit) / f))
    spec.levels.z.push(Math.max(quantile(zz, q), 1))
  }
  const final = scoreReference(spec, values, n)
  let alarms = 0
  for (const s of final.score) if (s >= spec.thresholds.warn) alarms++
  spec.metrics = {
    explained_variance: cumulative / total,
    components: k,
    features: f,
    rows: n,
    training_alarm_rate: alarms / n,
    spe_limit_theory: speTheory,
    t2_limit_theory: t2Theory,
  }
  return spec
}

/**
 * Jackson and Mudholkar's limit of Q at `confidence` from the discarded eigenvalues. Falls back to a
 * small floor when the kept components explain everything (no residual variance at all).
 */
function jacksonMudholkar(residual: number[], confidence: number, total: number): number {
  const theta = [1, 2, 3].map((p) => residual.reduce((a, l) => a + l ** p, 0))
  const [t1, t2, t3] = theta as [number, number, number]
  const floor = 1e-6 * total
  if (t1 <= floor) return floor
  let h0 = 1 - (2 * t1 * t3) / (3 * t2 * t2)
  if (h0 <= 0.01) h0 = 0.01
  const c = normalQuantile(confidence)
  const inner = (c * Math.sqrt(2 * t2 * h0 * h0)) / t1 + 1 + (t2 * h0 * (h0 - 1)) / (t1 * t1)
  return Math.max(t1 * Math.max(inner, 0) ** (1 / h0), floor)
}
