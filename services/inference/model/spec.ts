// What a trained model is: everything the ONNX graph computes with, plus what the service needs to
// turn the graph's outputs into a label, named anomalies and an explanation. The spec travels inside
// the ONNX file (metadata `vigil.model`), so a model file describes itself.

export type ModelScopeName = 'fleet' | 'site' | 'device'

export const MODEL_FORMAT = 'vigil.pca/1'

export interface ModelSpec {
  format: typeof MODEL_FORMAT
  /** Registry name: `fleet`, `site-<site>` or `device-<id>` (see modelName). */
  name: string
  /** Registry version; 0 until the registry stores it. */
  version: number
  scope: ModelScopeName
  /** The site or device id for site and device scopes; empty for the fleet. */
  scopeKey: string
  /** Feature order of the input tensor. */
  features: string[]
  /** Standardization: z = (x - mean) / scale. */
  mean: number[]
  scale: number[]
  /** Features that were constant in training (their scale is a floor, not a standard deviation). */
  constantFeatures: string[]
  /** Principal directions kept: features × components, column c is component c. */
  loadings: number[][]
  /** Variance along each kept component (λ). */
  eigenvalues: number[]
  /** Variance along the discarded directions (they make the Q limit). */
  residualEigenvalues: number[]
  /** Control limits at `confidence`. */
  speLimit: number
  t2Limit: number
  confidence: number
  /** Per-feature training levels (the `levelQuantile` of squared residual and squared z). */
  levels: { residual: number[]; z: number[]; quantile: number }
  /** Score thresholds: WARN at or above `warn`, ALERT at or above `alert`. */
  thresholds: { warn: number; alert: number }
  training: { rows: number; trimmedRows: number; start: string; end: string; source: string }
  metrics: Record<string, number>
  createdAt: string
}

/** The graph's outputs for a batch of rows (row-major; F = features). */
export interface ScoreOutputs {
  score: Float64Array
  spe: Float64Array
  t2: Float64Array
  /** rows × F: each feature's part of Q (squared residual). */
  speParts: Float64Array
  /** rows × F: each feature's part of T² (sums to T²; may be negative). */
  t2Parts: Float64Array
  /**
   * rows × F: reconstruction-based contributions to the combined index Q/Q_limit + T²/T²_limit
   * (how much of it goes away when the feature alone is corrected). They point at the feature that
   * moved far more reliably than raw Q or T² parts, which smear onto correlated features.
   */
  contributions: Float64Array
}

export interface Interpretation {
  score: number
  label: 'OK' | 'WARN' | 'ALERT'
  anomalies: { name: string; severity: 'low' | 'medium' | 'high'; ratio: number }[]
  explain: {
    shapTop: { name: string; contribution: number; value: number }[]
    spe: number
    speLimit: number
    t2: number
    t2Limit: number
  }
}

/** How many features the explanation names. */
export const EXPLAIN_TOP = 3

const names = new Map<string, string>()

/** The model name of a scope: `fleet`, `site-<key>`, `device-<key>` (key escaped for KV keys). */
export function modelName(scope: ModelScopeName, key = ''): string {
  if (scope === 'fleet') return 'fleet'
  if (!key) throw new Error(`a ${scope} model needs a ${scope} id`)
  const cacheKey = `${scope}\u0000${key}`
  let name = names.get(cacheKey)
  if (name === undefined) {
    // Looked up for every reading scored: remember (bounded).
    if (names.size >= 50_000) names.clear()
    name = `${scope}-${key.replace(/[^A-Za-z0-9_-]/g, (c) => `=${c.charCodeAt(0).toString(16).padStart(2, '0')}`)}`
    names.set(cacheKey, name)
  }
  return name
}

/** The model's input: the chosen rows' values in the model's feature order (row-major). */
export function featureMatrix(features: string[], rows: Record<string, number>[]): Float64Array {
  const f = features.length
  const values = new Float64Array(rows.length * f)
  rows.forEach((row, i) => {
    for (let j = 0; j < f; j++) values[i * f + j] = row[features[j] as string] as number
  })
  return values
}

/** The label of a score. */
export function labelOf(spec: ModelSpec, score: number): Interpretation['label'] {
  return score >= spec.thresholds.alert ? 'ALERT' : score >= spec.thresholds.warn ? 'WARN' : 'OK'
}

/**
 * The features that contribute most to one row's index, most first (a few of a handful: insertion
 * into a short list), into `top`; returns how many (EXPLAIN_TOP at most) and the contributions' sum.
 */
export function topContributions(
  contributions: Float64Array,
  row: number,
  f: number,
  top: Int32Array,
): { count: number; total: number } {
  let total = 0
  let count = 0
  for (let j = 0; j < f; j++) {
    const c = contributions[row * f + j] as number
    total += c
    let at = count
    while (at > 0 && (contributions[row * f + (top[at - 1] as number)] as number) < c) at--
    if (at < EXPLAIN_TOP) {
      top.copyWithin(at + 1, at, EXPLAIN_TOP - 1)
      top[at] = j
      if (count < EXPLAIN_TOP) count++
    }
  }
  return { count, total }
}

/** How far feature `j` of a row is past its training level (the larger of its residual and z). */
export function anomalyRatio(
  spec: ModelSpec,
  speParts: Float64Array,
  row: number,
  j: number,
  value: number,
): number {
  const f = spec.features.length
  const residual = speParts[row * f + j] as number
  const z = ((value - (spec.mean[j] as number)) / (spec.scale[j] as number)) ** 2
  return Math.max(residual / (spec.levels.residual[j] as number), z / (spec.levels.z[j] as number))
}

const top = new Int32Array(EXPLAIN_TOP)

/** Turns one row of graph outputs into what the API answers. */
export function interpret(
  spec: ModelSpec,
  out: ScoreOutputs,
  row: number,
  values: ArrayLike<number>,
): Interpretation {
  const f = spec.features.length
  const score = out.score[row] as number
  const label = labelOf(spec, score)
  const { count, total } = topContributions(out.contributions, row, f, top)
  const shapTop = Array.from(top.subarray(0, count), (j) => ({
    name: spec.features[j] as string,
    contribution: total > 0 ? (out.contributions[row * f + j] as number) / total : 0,
    value: values[j] as number,
  }))
  const anomalies: Interpretation['anomalies'] = []
  if (label !== 'OK') {
    for (let j = 0; j < f; j++) {
      const ratio = anomalyRatio(spec, out.speParts, row, j, values[j] as number)
      if (ratio >= ANOMALY_RATIO)
        anomalies.push({ name: spec.features[j] as string, severity: severityOf(ratio), ratio })
    }
    anomalies.sort((a, b) => b.ratio - a.ratio)
  }
  return {
    score,
    label,
    anomalies,
    explain: {
      shapTop,
      spe: out.spe[row] as number,
      speLimit: spec.speLimit,
      t2: out.t2[row] as number,
      t2Limit: spec.t2Limit,
    },
  }
}

/** A feature is named when its error is this many times its training level (squared units). */
export const ANOMALY_RATIO = 2
export function severityOf(ratio: number): 'low' | 'medium' | 'high' {
  return ratio >= 25 ? 'high' : ratio >= 6 ? 'medium' : 'low'
}
