import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { ModelProtoSchema } from 'onnx-buf'
import * as ort from 'onnxruntime-node'
import { InferenceBatchSchema, ReadingSchema } from '../../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { encodeReadingBatch } from '../../common/codec.js'
import { bankParameters, buildBankOnnx, buildOnnx, GRAPH, scoreOutputsOf } from '../model/onnx.js'
import { type ModelSpec, modelName, type ScoreOutputs } from '../model/spec.js'
import {
  anomalousReading,
  normalReading,
  Rng,
  type SyntheticDevice,
  syntheticFleet,
} from '../model/synthetic.js'
import { trainingSet, trainModel } from '../model/train.js'
import { RouteCache, type Routes } from '../routing.js'
import { bankFeeds, ModelBank } from './bank.js'
import { type RunnableModel, scoreReadingBatch } from './batch.js'

const rng = new Rng(7)
const fleet = syntheticFleet(14, 11)

interface Trained {
  key: string
  spec: ModelSpec
  bytes: Uint8Array
  session: ort.InferenceSession
}

/** Device models with 1 to 5 components (the share of variance kept varies). */
async function train(device: SyntheticDevice, variance: number): Promise<Trained> {
  const rows = Array.from({ length: 200 }, (_, i) => ({
    sensors: normalReading(device, rng),
    tsMs: i * 1000,
  }))
  const spec = trainModel(trainingSet(rows, 'test'), {
    scope: 'device',
    scopeKey: device.id,
    varianceToKeep: variance,
  })
  const bytes = buildOnnx(spec)
  return { key: `${spec.name}@1`, spec, bytes, session: await ort.InferenceSession.create(bytes) }
}

const own = (m: Trained) => async (values: Float64Array, rows: number) =>
  scoreOutputsOf(
    await m.session.run({ [GRAPH.input]: new ort.Tensor('float64', values, [rows, m.spec.features.length]) }),
  )

describe('inference: the model bank', () => {
  let trained: Trained[] = []
  let bankSession: ort.InferenceSession
  let bankRuns = 0
  const runBank = async (bank: ModelBank, values: Float64Array, slots: BigInt64Array, rows: number) => {
    bankRuns++
    return scoreOutputsOf(await bankSession.run(bankFeeds(bank, values, slots, rows)))
  }

  before(async () => {
    const variances = [0.5, 0.7, 0.9, 0.99, 0.999]
    trained = await Promise.all(fleet.map((d, i) => train(d, variances[i % variances.length] as number)))
    bankSession = await ort.InferenceSession.create(buildBankOnnx())
  })
  after(async () => {
    for (const m of trained) await m.session.release()
    await bankSession.release()
  })

  const close = (a: ArrayLike<number>, b: ArrayLike<number>, what: string) => {
    assert.equal(a.length, b.length, what)
    for (let i = 0; i < a.length; i++) {
      const x = a[i] as number
      const y = b[i] as number
      assert.ok(
        Math.abs(x - y) <= 1e-9 * Math.max(1, Math.abs(y)),
        `${what}[${i}]: bank ${x}, own graph ${y}`,
      )
    }
  }

  it('scores each row as its own model file does, across slot reuse and growth', async () => {
    const components = new Set(trained.map((m) => m.spec.eigenvalues.length))
    assert.ok(components.size >= 3, `models with several component counts (${[...components].join(', ')})`)
    const bank = new ModelBank(6, runBank)
    // Narrow models first, so adding a wider one re-lays the stacked components out.
    const order = [...trained].sort((a, b) => a.spec.eigenvalues.length - b.spec.eigenvalues.length)
    for (const m of order)
      bank.add(m.key, bankParameters(m.bytes) as NonNullable<ReturnType<typeof bankParameters>>)
    assert.ok(bank.models > 8, 'the bank grew past its first capacity')
    // A removed model's slot goes to the next one added.
    const gone = order[0] as Trained
    const slot = bank.slotOf(gone.key)
    bank.remove(gone.key)
    bank.add('again', bankParameters(gone.bytes) as NonNullable<ReturnType<typeof bankParameters>>)
    assert.equal(bank.slotOf('again'), slot)

    const rows = 1000
    const features = trained[0]?.spec.features as string[]
    const members = trained.map((m) => ({ m, key: m === gone ? 'again' : m.key }))
    const picks = Array.from(
      { length: rows },
      () => members[Math.floor(rng.next() * members.length)] as (typeof members)[number],
    )
    const values = Float64Array.from(
      picks.flatMap(({ m }, i) => {
        const device = fleet[trained.indexOf(m)] as SyntheticDevice
        const r = i % 10 === 0 ? anomalousReading(device, 'spike', rng).sensors : normalReading(device, rng)
        return features.map((f) => r[f as keyof typeof r])
      }),
    )
    const slots = BigInt64Array.from(picks.map(({ key }) => BigInt(bank.slotOf(key) as number)))
    const banked = await runBank(bank, values, slots, rows)
    const f = features.length
    const expect: Record<keyof ScoreOutputs, number[]> = {
      score: [],
      spe: [],
      t2: [],
      speParts: [],
      t2Parts: [],
      contributions: [],
    }
    for (let i = 0; i < rows; i++) {
      const out = await own(picks[i]?.m as Trained)(values.slice(i * f, (i + 1) * f), 1)
      for (const k of Object.keys(expect) as (keyof ScoreOutputs)[]) expect[k].push(...out[k])
    }
    for (const k of Object.keys(expect) as (keyof ScoreOutputs)[]) close(banked[k], expect[k], k)
  })

  it('scores a batch of many device models in one run, with the answers of their own runs', async () => {
    const bank = new ModelBank(6, runBank)
    const routes: Routes<string> = new Map()
    const withBank = new Map<string, RunnableModel>()
    const alone = new Map<string, RunnableModel>()
    let ownRuns = 0
    for (const m of trained) {
      bank.add(m.key, bankParameters(m.bytes) as NonNullable<ReturnType<typeof bankParameters>>)
      const run = own(m)
      const counted = (values: Float64Array, rows: number) => {
        ownRuns++
        return run(values, rows)
      }
      withBank.set(m.key, { spec: m.spec, run: counted, bank })
      alone.set(m.key, { spec: m.spec, run: counted })
      routes.set(modelName('device', m.spec.scopeKey), { production: m.key })
    }
    const readings = Array.from({ length: 500 }, (_, i) => {
      const d = fleet[i % fleet.length] as SyntheticDevice
      const sensors = i % 7 === 0 ? anomalousReading(d, 'drift', rng).sensors : normalReading(d, rng)
      return create(ReadingSchema, {
        eventId: `${d.id}:${i}`,
        deviceId: d.id,
        ts: timestampFromMs(1_700_000_000_000 + i),
        sensors,
      })
    })
    const data = encodeReadingBatch('b1', readings, 'test')
    bankRuns = 0
    const banked = await scoreReadingBatch(data, 'x', 1_700_000_100_000, new RouteCache(routes, 0), withBank)
    assert.equal(bankRuns, 1, 'one bank run for the whole batch')
    assert.equal(ownRuns, 0)
    const separate = await scoreReadingBatch(data, 'x', 1_700_000_100_000, new RouteCache(routes, 0), alone)
    assert.equal(ownRuns, fleet.length, 'without the bank: a run per model')
    assert.deepEqual(banked.labels, separate.labels)
    assert.ok(banked.labels.WARN + banked.labels.ALERT > 0, 'the injected drifts are found')
    const a = fromBinary(InferenceBatchSchema, banked.bytes as Uint8Array).inferences
    const b = fromBinary(InferenceBatchSchema, separate.bytes as Uint8Array).inferences
    assert.equal(a.length, 500)
    assert.deepEqual(
      a.map((x) => [
        x.eventId,
        x.label,
        x.explain?.shapTop.map((c) => c.name),
        x.anomalies.map((y) => y.name),
      ]),
      b.map((x) => [
        x.eventId,
        x.label,
        x.explain?.shapTop.map((c) => c.name),
        x.anomalies.map((y) => y.name),
      ]),
    )
    close(
      a.map((x) => x.score),
      b.map((x) => x.score),
      'score',
    )
    // One model alone in a batch runs its own file.
    const single = encodeReadingBatch(
      'b2',
      readings.filter((r) => r.deviceId === fleet[0]?.id),
      'test',
    )
    bankRuns = 0
    ownRuns = 0
    await scoreReadingBatch(single, 'y', 1_700_000_100_000, new RouteCache(routes, 0), withBank)
    assert.deepEqual([bankRuns, ownRuns], [0, 1])
  })

  it('leaves out a file whose graph does not carry the parameters as a Vigil model does', () => {
    const m = trained[0] as Trained
    assert.ok(bankParameters(m.bytes))
    const model = fromBinary(ModelProtoSchema, m.bytes)
    const graph = model.graph as NonNullable<typeof model.graph>
    graph.initializer = graph.initializer.filter((t) => t.name !== 'inv_lambda')
    assert.equal(bankParameters(toBinary(ModelProtoSchema, model)), undefined)
    assert.equal(bankParameters(new Uint8Array([1, 2, 3])), undefined)
  })
})
