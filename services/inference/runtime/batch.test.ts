import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire'
import { TimestampSchema, timestampFromMs } from '@bufbuild/protobuf/wkt'
import * as ort from 'onnxruntime-node'
import {
  AlertSchema,
  type Inference,
  InferenceBatchSchema,
  InferenceSchema,
  type Reading,
  ReadingBatchSchema,
  ReadingSchema,
} from '../../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { buildOnnx, GRAPH, scoreOutputsOf } from '../model/onnx.js'
import { interpret, type ModelSpec, modelName, type ScoreOutputs } from '../model/spec.js'
import {
  anomalousReading,
  normalReading,
  Rng,
  type SyntheticDevice,
  syntheticFleet,
} from '../model/synthetic.js'
import { trainingSet, trainModel } from '../model/train.js'
import { RouteCache, type Routes } from '../routing.js'
import { inferenceFields, type RunnableModel, scoreReadingBatch, UndecodableBatchError } from './batch.js'

// The async scorer works on bytes; these tests hold it to protobuf-es: the batch decoded with
// fromBinary, each reading interpreted from the same graph outputs, the Inference made with create().

const rng = new Rng(3)
const fleet = syntheticFleet(6, 5)
const INFERRED_AT = 1_764_000_000_123

/** Every run the scorer made: its input and outputs, to build the expected inferences from. */
interface Recorded {
  spec: ModelSpec
  values: Float64Array
  out: ScoreOutputs
}

describe('inference: scoring a ReadingBatch from its bytes', () => {
  const sessions: ort.InferenceSession[] = []
  const models = new Map<string, RunnableModel>()
  const routes: Routes<string> = new Map()
  let runs: Recorded[] = []

  const add = async (key: string, spec: ModelSpec) => {
    const session = await ort.InferenceSession.create(buildOnnx(spec))
    sessions.push(session)
    models.set(key, {
      spec,
      run: async (values, rows) => {
        const out = scoreOutputsOf(
          await session.run({
            [GRAPH.input]: new ort.Tensor('float64', values, [rows, spec.features.length]),
          }),
        )
        runs.push({ spec, values: values.slice(), out })
        return out
      },
    })
  }

  before(async () => {
    const rows = (devices: SyntheticDevice[]) =>
      devices.flatMap((d) =>
        Array.from({ length: 80 }, (_, i) => ({
          sensors: normalReading(d, rng),
          tsMs: 1_700_000_000_000 + i,
        })),
      )
    await add('fleet@1', trainModel(trainingSet(rows(fleet), 't'), { scope: 'fleet' }))
    const north = fleet.filter((d) => d.site === fleet[0]?.site)
    await add(
      'site@3',
      trainModel(trainingSet(rows(north), 't'), { scope: 'site', scopeKey: fleet[0]?.site as string }),
    )
    const spec = trainModel(trainingSet(rows([fleet[1] as SyntheticDevice]), 't'), {
      scope: 'device',
      scopeKey: fleet[1]?.id as string,
    })
    await add('device@2', { ...spec, version: 2 })
    routes.set('fleet', { production: 'fleet@1' })
    routes.set(modelName('site', fleet[0]?.site as string), { production: 'site@3' })
    routes.set(modelName('device', fleet[1]?.id as string), { production: 'device@2' })
  })
  after(async () => {
    for (const s of sessions) await s.release()
  })

  /** A ReadingBatch's bytes; `extra[i]` is appended to reading i's own bytes (fields protobuf-es cannot make). */
  const batchBytes = (batchId: string, readings: Reading[], extra: Uint8Array[] = []) => {
    const w = new BinaryWriter()
    w.tag(1, WireType.LengthDelimited).string(batchId)
    readings.forEach((r, i) => {
      const own = toBinary(ReadingSchema, r)
      const more = extra[i] ?? new Uint8Array(0)
      const bytes = new Uint8Array(own.length + more.length)
      bytes.set(own)
      bytes.set(more, own.length)
      w.tag(2, WireType.LengthDelimited).bytes(bytes)
    })
    w.tag(3, WireType.LengthDelimited).string('test')
    return w.finish()
  }

  /** The inferences protobuf-es makes of the same batch, from the runs the scorer made. */
  const expected = (bytes: Uint8Array, batchId: string) => {
    const readings = fromBinary(ReadingBatchSchema, bytes).readings
    const cache = new RouteCache(routes, 0)
    const next = new Map<Recorded, number>()
    const inferences: Inference[] = []
    for (const r of readings) {
      const spec = models.get(cache.select(r.deviceId, r.meta.site) as string)?.spec as ModelSpec
      if (spec.features.some((f) => r.sensors[f] === undefined)) continue
      const f = spec.features.length
      const values = spec.features.map((name) => r.sensors[name] as number)
      // The run and row that scored this reading: the first unused row of its model's run with these values.
      const run = runs.find((x) => x.spec === spec) as Recorded
      let row = next.get(run) ?? 0
      while (values.some((v, j) => run.values[row * f + j] !== v)) row++
      next.set(run, row + 1)
      const result = interpret(spec, run.out, row, values)
      inferences.push(
        create(InferenceSchema, {
          eventId: r.eventId,
          deviceId: r.deviceId,
          ...(r.ts ? { ts: r.ts } : {}),
          inferredAt: timestampFromMs(INFERRED_AT),
          features: r.sensors,
          ...inferenceFields(spec, result),
        }),
      )
    }
    return create(InferenceBatchSchema, { batchId: `inf-${batchId}`, inferences })
  }

  const reading = (
    i: number,
    device: SyntheticDevice,
    sensors: Record<string, number>,
    more: Partial<Reading> = {},
  ) =>
    create(ReadingSchema, {
      eventId: `${device.id}:seq:${i}`,
      deviceId: device.id,
      ts: timestampFromMs(1_764_000_000_000 + i * 7),
      sensors,
      meta: { fw: '1.2', site: device.site },
      seq: BigInt(i),
      receivedAt: timestampFromMs(1_764_000_000_500 + i),
      ...more,
    })

  it('writes what protobuf-es would, for every model scope and awkward readings', async () => {
    const readings: Reading[] = []
    for (let i = 0; i < 300; i++) {
      const d = fleet[i % fleet.length] as SyntheticDevice
      const anomalous = i % 9 === 0
      const sensors: Record<string, number> = anomalous
        ? anomalousReading(d, i % 2 ? 'spike' : 'broken_correlation', rng).sensors
        : normalReading(d, rng)
      readings.push(reading(i, d, sensors))
    }
    const d = fleet[2] as SyntheticDevice
    readings.push(
      // Unicode ids, an extra sensor the model does not know, no timestamp, no meta.
      reading(
        1000,
        d,
        { ...normalReading(d, rng), extra: 5, 'ünïcode ✓': -0 },
        {
          eventId: 'é-1 "quoted" \\ ✓',
          ts: undefined,
          meta: {},
        },
      ),
      // No event id; a timestamp before 1970; zero values.
      reading(
        1001,
        d,
        { ...normalReading(d, rng), current: 0 },
        { eventId: '', ts: create(TimestampSchema, { seconds: -5n, nanos: 7 }) },
      ),
      // A feature missing: not scored, counted.
      reading(1002, d, { humidity: 40 }),
      // The device id and a sensor given twice; Protobuf keeps the last of each.
      reading(1003, d, normalReading(d, rng)),
    )
    const twice = new BinaryWriter()
    twice.tag(2, WireType.LengthDelimited).string(fleet[1]?.id as string)
    twice.tag(4, WireType.LengthDelimited).fork().tag(1, WireType.LengthDelimited).string('voltage')
    twice.tag(2, WireType.Bit64).double(231.5).join()
    // An unknown field of each wire type.
    twice
      .tag(99, WireType.Varint)
      .uint64(5n)
      .tag(98, WireType.Bit32)
      .fixed32(1)
      .tag(97, WireType.Bit64)
      .fixed64(2n)
    const extra = Array.from({ length: readings.length }, (_, i) =>
      i === readings.length - 1 ? twice.finish() : new Uint8Array(0),
    )
    const bytes = batchBytes('b-1', readings, extra)

    runs = []
    const outcome = await scoreReadingBatch(bytes, 'seq-1', INFERRED_AT, new RouteCache(routes, 0), models)
    const want = expected(bytes, 'b-1')
    const got = fromBinary(InferenceBatchSchema, outcome.bytes as Uint8Array)
    assert.deepEqual(got, want)
    assert.equal(got.inferences.length, readings.length - 1)
    assert.equal(outcome.missing, 1)
    assert.equal(outcome.noModel, 0)
    assert.equal(outcome.batchId, 'inf-b-1')
    // Every scope served, the unicode reading's extra sensors kept in its features.
    assert.deepEqual(
      new Set(got.inferences.map((x) => x.model?.name)),
      new Set(['fleet', `site-${fleet[0]?.site}`, `device-${fleet[1]?.id}`]),
    )
    const last = got.inferences.at(-1) as Inference
    assert.equal(last.deviceId, fleet[1]?.id)
    assert.equal(last.features.voltage, 231.5)
    // Labels and scores as reported, an Alert per WARN/ALERT inference.
    const flagged = got.inferences.filter((x) => x.label !== 'OK')
    assert.ok(flagged.length >= 20, `the injected anomalies are flagged (${flagged.length})`)
    assert.ok(flagged.some((x) => x.anomalies.length > 0))
    assert.deepEqual(outcome.labels, {
      OK: got.inferences.length - flagged.length,
      WARN: flagged.filter((x) => x.label === 'WARN').length,
      ALERT: flagged.filter((x) => x.label === 'ALERT').length,
    })
    assert.deepEqual(
      [...outcome.scores],
      got.inferences.map((x) => x.score),
    )
    assert.deepEqual(
      outcome.alerts.map((a) => ({ deviceId: a.deviceId, alert: fromBinary(AlertSchema, a.bytes) })),
      flagged.map((x) => ({
        deviceId: x.deviceId,
        alert: create(AlertSchema, { inference: x, label: x.label }),
      })),
    )
  })

  it('waits for a model when a reading has none, and refuses bytes that are not a ReadingBatch', async () => {
    const d = fleet[3] as SyntheticDevice
    const none = new Map<string, RunnableModel>()
    const outcome = await scoreReadingBatch(
      batchBytes('b-2', [reading(1, d, normalReading(d, rng))]),
      'x',
      INFERRED_AT,
      new RouteCache(routes, 0),
      none,
    )
    assert.deepEqual([outcome.noModel, outcome.bytes], [1, null])

    const readings = [0, 1, 2].map((i) => reading(i, d, normalReading(d, rng)))
    const bytes = batchBytes('b-3', readings)
    for (const bad of [new Uint8Array([0x12, 0x05, 0x0a]), new Uint8Array([0xff, 0xff, 0xff])])
      await assert.rejects(
        scoreReadingBatch(bad, 'x', INFERRED_AT, new RouteCache(routes, 0), models),
        UndecodableBatchError,
      )
    // Cut at every length: refused where protobuf-es refuses; otherwise what protobuf-es makes of it.
    for (let cut = 0; cut < bytes.length; cut++) {
      const part = bytes.subarray(0, cut)
      let theirs = true
      try {
        fromBinary(ReadingBatchSchema, part)
      } catch {
        theirs = false
      }
      runs = []
      const ours = await scoreReadingBatch(part, 'x', INFERRED_AT, new RouteCache(routes, 0), models).catch(
        (err: unknown) => {
          assert.ok(err instanceof UndecodableBatchError, String(err))
          return undefined
        },
      )
      assert.equal(ours !== undefined, theirs, `cut at ${cut} of ${bytes.length}`)
      if (ours?.bytes) assert.deepEqual(fromBinary(InferenceBatchSchema, ours.bytes), expected(part, 'b-3'))
    }
  })
})
