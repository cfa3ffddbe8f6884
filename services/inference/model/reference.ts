// The model's computation in plain TypeScript, operation for operation what the ONNX graph does.
// Training uses it (limits, levels, trimming); tests compare ONNX Runtime against it.
import type { ModelSpec, ScoreOutputs } from './spec.js'

export function scoreReference(
  spec: Pick<ModelSpec, 'features' | 'mean' | 'scale' | 'loadings' | 'eigenvalues' | 'speLimit' | 't2Limit'>,
  values: Float64Array,
  rows: number,
): ScoreOutputs {
  const f = spec.features.length
  const k = spec.eigenvalues.length
  const out: ScoreOutputs = {
    score: new Float64Array(rows),
    spe: new Float64Array(rows),
    t2: new Float64Array(rows),
    speParts: new Float64Array(rows * f),
    t2Parts: new Float64Array(rows * f),
    contributions: new Float64Array(rows * f),
  }
  const invRbcDiag = rbcDiagonal(spec).map((d) => 1 / d)
  const z = new Float64Array(f)
  const t = new Float64Array(k)
  for (let i = 0; i < rows; i++) {
    for (let j = 0; j < f; j++)
      z[j] = ((values[i * f + j] as number) - (spec.mean[j] as number)) / (spec.scale[j] as number)
    let t2 = 0
    for (let c = 0; c < k; c++) {
      let s = 0
      for (let j = 0; j < f; j++) s += (z[j] as number) * ((spec.loadings[j] as number[])[c] as number)
      t[c] = s
      t2 += (s * s) / (spec.eigenvalues[c] as number)
    }
    let spe = 0
    for (let j = 0; j < f; j++) {
      let recon = 0
      let weighted = 0
      for (let c = 0; c < k; c++) {
        const p = (spec.loadings[j] as number[])[c] as number
        recon += (t[c] as number) * p
        weighted += ((t[c] as number) / (spec.eigenvalues[c] as number)) * p
      }
      const e = (z[j] as number) - recon
      out.speParts[i * f + j] = e * e
      out.t2Parts[i * f + j] = (z[j] as number) * weighted
      const m = e / spec.speLimit + weighted / spec.t2Limit
      out.contributions[i * f + j] = m * m * (invRbcDiag[j] as number)
      spe += e * e
    }
    out.spe[i] = spe
    out.t2[i] = t2
    const r = Math.max(spe / spec.speLimit, t2 / spec.t2Limit)
    out.score[i] = r / (1 + r)
  }
  return out
}

/**
 * The diagonal of the combined index's matrix, M = (I - PPᵀ)/Q_limit + PΛ⁻¹Pᵀ/T²_limit: what a
 * feature's reconstruction-based contribution (Alcala and Qin) is divided by.
 */
export function rbcDiagonal(
  spec: Pick<ModelSpec, 'loadings' | 'eigenvalues' | 'speLimit' | 't2Limit'>,
): number[] {
  return spec.loadings.map((row) => {
    let kept = 0
    let weighted = 0
    row.forEach((p, c) => {
      kept += p * p
      weighted += (p * p) / (spec.eigenvalues[c] as number)
    })
    return Math.max(1 - kept, 0) / spec.speLimit + weighted / spec.t2Limit
  })
}
