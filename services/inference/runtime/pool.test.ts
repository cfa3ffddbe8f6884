import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { after, before, describe, it } from 'node:test'
import { create } from '@bufbuild/protobuf'
import pino from 'pino'
import { ReadingSchema } from '../../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { encodeReadingBatch } from '../../common/codec.js'
import { buildOnnx } from '../model/onnx.js'
import { scoreReference } from '../model/reference.js'
import { normalReading, Rng, syntheticFleet } from '../model/synthetic.js'
import { trainingSet, trainModel } from '../model/train.js'
import { ScoringPool } from './pool.js'

function capture() {
  const lines: string[] = []
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(String(chunk))
      done()
    },
  })
  return { log: pino({ level: 'info' }, stream), lines }
}

describe('scoring pool: ONNX Runtime in worker threads', () => {
  const rng = new Rng(5)
  const [device] = syntheticFleet(1, 3)
  const spec = trainModel(
    trainingSet(
      Array.from({ length: 300 }, (_, i) => ({ sensors: normalReading(device!, rng), tsMs: i })),
      'test',
    ),
    { scope: 'fleet' },
  )
  const bytes = buildOnnx(spec)
  const f = spec.features.length
  const row = () =>
    Float64Array.from(spec.features.map((name) => normalReading(device!, rng)[name as 'pressure']))
  let pool: ScoringPool
  const runs: number[] = []
  const { log, lines } = capture()

  before(() => {
    // CUDA is asked for; this machine has no CUDA provider libraries, so the pool must say so and use the CPU.
    pool = new ScoringPool({ threads: 2, provider: 'cuda', log, onRun: (rows) => runs.push(rows) })
  })
  after(() => pool.close())

  it('falls back to the CPU with a log line when CUDA cannot load', async () => {
    await pool.load('m1', bytes, f)
    assert.equal(pool.provider, 'cpu')
    assert.ok(
      lines.some((l) => l.includes('CUDA is not available here: scoring on the CPU')),
      lines.join(''),
    )
    const out = await pool.score('m1', row(), 1, f)
    assert.equal(out.score.length, 1)
  })

  it('coalesces concurrent single-row requests into few runs, each answer its own', async () => {
    runs.length = 0
    const inputs = Array.from({ length: 500 }, row)
    const outs = await Promise.all(inputs.map((values) => pool.score('m1', values, 1, f)))
    assert.ok(runs.length < 50, `${runs.length} runs for 500 requests`)
    inputs.forEach((values, i) => {
      const want = scoreReference(spec, values, 1)
      assert.ok(Math.abs((outs[i]?.score[0] as number) - (want.score[0] as number)) < 1e-9)
      assert.ok(
        Math.abs((outs[i]?.contributions[f - 1] as number) - (want.contributions[f - 1] as number)) < 1e-9,
      )
    })
  })

  it('runs what was queued for a model before releasing it', async () => {
    await pool.load('m2', bytes, f)
    const pending = Array.from({ length: 100 }, () => pool.score('m2', row(), 1, f))
    pool.release('m2')
    const outs = await Promise.all(pending)
    assert.equal(outs.length, 100)
    await assert.rejects(pool.score('m2', row(), 1, f), /not loaded/)
  })

  it('scores a ReadingBatch handed over as a view into a larger buffer, leaving that buffer alone', async () => {
    await pool.load('fleet@1', bytes, f)
    pool.route('fleet', 'production', 'fleet@1')
    const readings = Array.from({ length: 20 }, (_, i) =>
      create(ReadingSchema, {
        eventId: `e-${i}`,
        deviceId: device!.id,
        sensors: normalReading(device!, rng),
      }),
    )
    const batch = encodeReadingBatch('b-1', readings, 'test')
    // As the NATS client gives a message: a Node Buffer over a larger receive buffer.
    const received = Buffer.alloc(batch.length + 1000, 7)
    received.set(batch, 500)
    const data = received.subarray(500, 500 + batch.length)
    const outcome = await pool.scoreBatch(data, 'x', Date.now())
    assert.equal(outcome.labels.OK + outcome.labels.WARN + outcome.labels.ALERT, 20)
    assert.equal(received.buffer.byteLength, batch.length + 1000, 'the receive buffer is not detached')
    assert.deepEqual(data, Buffer.from(batch))
    assert.equal(received[0], 7)
  })

  it('refuses a file ONNX Runtime cannot load, saying why', async () => {
    await assert.rejects(
      pool.load('bad', new Uint8Array([8, 1, 18, 3, 1, 2, 3]), f),
      /ONNX Runtime cannot use this model/,
    )
  })
})
