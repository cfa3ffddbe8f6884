import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import * as ort from 'onnxruntime-node'
import { buildOnnx, GRAPH, InvalidModelError, readSpec, scoreOutputsOf, withVersion } from './onnx.js'
import { scoreReference } from './reference.js'
import { interpret, type ModelSpec, modelName, type ScoreOutputs } from './spec.js'
import { fQuantile, normalQuantile, quantile } from './stats.js'
import {
  type AnomalyKind,
  anomalousReading,
  normalReading,
  Rng,
  SENSORS,
  type SyntheticDevice,
  type SyntheticRow,
  syntheticFleet,
  syntheticStream,
} from './synthetic.js'
import { TrainingError, trainingSet, trainModel } from './train.js'

function normalSet(device: SyntheticDevice, rows: number, rng: Rng) {
  return trainingSet(
    Array.from({ length: rows }, (_, i) => ({
      sensors: normalReading(device, rng),
      tsMs: 1_700_000_000_000 + i * 1000,
    })),
    'test',
  )
}

function matrix(spec: ModelSpec, rows: { sensors: Record<string, number> }[]): Float64Array {
  return Float64Array.from(rows.flatMap((r) => spec.features.map((f) => r.sensors[f] as number)))
}

async function runOrt(
  bytes: Uint8Array,
  values: Float64Array,
  rows: number,
  f: number,
): Promise<ScoreOutputs> {
  const session = await ort.InferenceSession.create(bytes)
  try {
    return scoreOutputsOf(await session.run({ [GRAPH.input]: new ort.Tensor('float64', values, [rows, f]) }))
  } finally {
    await session.release()
  }
}

describe('model: distribution functions', () => {
  it('give the table values of the normal and F quantiles', () => {
    assert.ok(Math.abs(normalQuantile(0.999) - 3.090232) < 1e-5)
    assert.ok(Math.abs(normalQuantile(0.975) - 1.959964) < 1e-5)
    assert.ok(Math.abs(normalQuantile(0.01) + 2.326348) < 1e-5)
    assert.ok(Math.abs(fQuantile(0.99, 2, 100) - 4.8239) < 1e-3)
    assert.ok(Math.abs(fQuantile(0.95, 3, 20) - 3.0984) < 1e-3)
    assert.ok(Math.abs(fQuantile(0.999, 1, 50) - 12.222) < 1e-2)
    assert.equal(quantile([3, 1, 2, 4], 0.5), 2.5)
  })
})

describe('model: PCA with Hotelling T² and Q, as ONNX', () => {
  const rng = new Rng(11)
  const [device] = syntheticFleet(1, 5) as [SyntheticDevice]
  const spec = trainModel(normalSet(device, 400, rng), { scope: 'device', scopeKey: device.id })
  const bytes = buildOnnx(spec)

  it('records features, limits, components, window, rows and metrics in the file', () => {
    const back = readSpec(bytes)
    assert.deepEqual(back.features, [...SENSORS])
    assert.equal(back.name, 'device-dev-0001')
    assert.equal(back.training.rows, 400)
    assert.ok(back.speLimit > 0 && back.t2Limit > 0)
    assert.equal(back.eigenvalues.length, back.metrics.components)
    assert.ok((back.metrics.explained_variance as number) >= 0.9)
    assert.ok(back.training.start < back.training.end)
    const numbered = withVersion(bytes, 7)
    assert.equal(readSpec(numbered.bytes).version, 7)
  })

  it('ONNX Runtime gives what the plain TypeScript computation gives, within 1e-4, on 1,000 rows', async () => {
    const rows: SyntheticRow[] = syntheticStream(device, 1000, 0.05, rng)
    const values = matrix(spec, rows)
    const want = scoreReference(spec, values, rows.length)
    const got = await runOrt(bytes, values, rows.length, spec.features.length)
    let worst = 0
    for (const key of ['score', 'spe', 't2', 'speParts', 't2Parts', 'contributions'] as const) {
      assert.equal(got[key].length, want[key].length, key)
      for (let i = 0; i < want[key].length; i++)
        worst = Math.max(worst, Math.abs((got[key][i] as number) - (want[key][i] as number)))
    }
    assert.ok(worst <= 1e-4, `largest difference ${worst}`)
    // The batch dimension is dynamic: one row works as well as a thousand.
    const one = await runOrt(bytes, values.subarray(0, spec.features.length), 1, spec.features.length)
    assert.ok(Math.abs((one.score[0] as number) - (want.score[0] as number)) <= 1e-4)
  })

  it('refuses files that are not Vigil models', () => {
    assert.throws(() => readSpec(new Uint8Array([1, 2, 3, 4, 5])), InvalidModelError)
    const foreign = withVersion(bytes, 1).bytes
    // Same graph, metadata stripped: not ours.
    const text = Buffer.from(foreign)
    const at = text.indexOf('vigil.model')
    text.write('other.model', at)
    assert.throws(() => readSpec(text), /no "vigil.model" metadata/)
  })

  it('says why it cannot train', () => {
    assert.throws(() => trainModel(normalSet(device, 10, rng), { scope: 'fleet' }), TrainingError)
    const oneFeature = trainingSet(
      Array.from({ length: 100 }, (_, i) => ({ sensors: { temp: i }, tsMs: i })),
      'test',
    )
    assert.throws(() => trainModel(oneFeature, { scope: 'fleet' }), /at least 2 features/)
  })

  it('handles a constant feature: trains, and notices when it moves', () => {
    const rows = Array.from({ length: 300 }, (_, i) => ({
      sensors: { ...normalReading(device, rng), firmware_mode: 3 },
      tsMs: i,
    }))
    const constant = trainModel(trainingSet(rows, 'test'), { scope: 'fleet' })
    assert.deepEqual(constant.constantFeatures, ['firmware_mode'])
    const normal = { ...normalReading(device, rng), firmware_mode: 3 }
    const moved = { ...normalReading(device, rng), firmware_mode: 4 }
    const values = matrix(constant, [{ sensors: normal }, { sensors: moved }])
    const out = scoreReference(constant, values, 2)
    assert.ok(out.score.every((s) => Number.isFinite(s)))
    const f = constant.features.length
    assert.equal(interpret(constant, out, 0, values.subarray(0, f)).label, 'OK')
    const verdict = interpret(constant, out, 1, values.subarray(f, 2 * f))
    assert.equal(verdict.label, 'ALERT')
    assert.equal(verdict.explain.shapTop[0]?.name, 'firmware_mode')
  })

  it('trims gross outliers from the training window', () => {
    const dirty = Array.from({ length: 400 }, (_, i) => ({
      sensors: i % 40 === 0 ? anomalousReading(device, 'spike', rng).sensors : normalReading(device, rng),
      tsMs: i,
    }))
    const trimmed = trainModel(trainingSet(dirty, 'test'), { scope: 'fleet' })
    assert.ok(trimmed.training.trimmedRows >= 8, `trimmed ${trimmed.training.trimmedRows}`)
    assert.ok(trimmed.speLimit < 3 * spec.speLimit && trimmed.t2Limit < 3 * spec.t2Limit)
  })

  it('names scopes so that they can be registry keys', () => {
    assert.equal(modelName('fleet'), 'fleet')
    assert.equal(modelName('site', 'HYD-PLANT-2'), 'site-HYD-PLANT-2')
    assert.equal(modelName('device', 'plant:7.a'), 'device-plant=3a7=2ea')
  })
})

describe('model: detection on a synthetic fleet with labelled injected anomalies', () => {
  // 20 devices, each with its own model trained on 400 normal rows, then 1,000 rows each with 3%
  // anomalies: spikes, drifts, broken correlations between sensors and shifts along them.
  const rng = new Rng(2024)
  const fleet = syntheticFleet(20, 99)
  const tally = { tp: 0, fn: 0, fp: 0, tn: 0, named: 0, explainable: 0 }
  const byKind = new Map<AnomalyKind, { found: number; total: number; residualOnly: number }>()
  for (const device of fleet) {
    const spec = trainModel(normalSet(device, 400, rng), { scope: 'device', scopeKey: device.id })
    const rows = syntheticStream(device, 1000, 0.03, rng)
    const values = matrix(spec, rows)
    const out = scoreReference(spec, values, rows.length)
    const f = spec.features.length
    rows.forEach((row, i) => {
      if (row.ambiguous) return
      const verdict = interpret(spec, out, i, values.subarray(i * f, (i + 1) * f))
      const flagged = verdict.label !== 'OK'
      if (!row.anomaly) {
        if (flagged) tally.fp++
        else tally.tn++
        return
      }
      const kind = byKind.get(row.anomaly.kind) ?? { found: 0, total: 0, residualOnly: 0 }
      kind.total++
      if ((out.spe[i] as number) >= spec.speLimit) kind.residualOnly++
      if (flagged) {
        tally.tp++
        kind.found++
        if (row.anomaly.feature !== 'load') {
          tally.explainable++
          if (verdict.explain.shapTop[0]?.name === row.anomaly.feature) tally.named++
        }
      } else tally.fn++
      byKind.set(row.anomaly.kind, kind)
    })
  }

  it('finds at least 95% of the injected anomalies', (t) => {
    const recall = tally.tp / (tally.tp + tally.fn)
    t.diagnostic(`recall ${recall.toFixed(4)} of ${tally.tp + tally.fn}: ${JSON.stringify([...byKind])}`)
    assert.ok(tally.tp + tally.fn > 500, 'enough anomalies to judge')
    assert.ok(recall >= 0.95, `recall ${recall.toFixed(4)} (${JSON.stringify([...byKind])})`)
  })

  it('raises at most 1% false alarms on normal readings', (t) => {
    const fpr = tally.fp / (tally.fp + tally.tn)
    t.diagnostic(`false-positive rate ${fpr.toFixed(4)} of ${tally.fp + tally.tn}`)
    assert.ok(tally.tn > 15_000)
    assert.ok(fpr <= 0.01, `false-positive rate ${fpr.toFixed(4)}`)
  })

  it('puts the injected feature first in the explanation of at least 90% of detected anomalies', (t) => {
    const rate = tally.named / tally.explainable
    t.diagnostic(`named first in ${tally.named} of ${tally.explainable}`)
    assert.ok(rate >= 0.9, `named first in ${(rate * 100).toFixed(1)}% of ${tally.explainable}`)
  })

  it('needs T²: the residual alone misses shifts along the normal correlations that the model finds', () => {
    const shift = byKind.get('correlated_shift')
    assert.ok(shift && shift.total > 50)
    assert.ok(shift.found / shift.total >= 0.95, `model found ${shift.found}/${shift.total}`)
    assert.ok(shift.residualOnly / shift.total < 0.2, `Q alone found ${shift.residualOnly}/${shift.total}`)
  })
})
