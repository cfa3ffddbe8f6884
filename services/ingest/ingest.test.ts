import assert from 'node:assert/strict'
import { after, before, beforeEach, describe, it } from 'node:test'
import { create } from '@bufbuild/protobuf'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError, createClient, type Transport } from '@connectrpc/connect'
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { InferenceService } from '../../gen/vigil/inference/v1/inference_pb.js'
import { IngestService } from '../../gen/vigil/ingest/v1/ingest_pb.js'
import {
  ModelRefSchema,
  type Reading,
  ReadingSchema,
  RejectReason,
} from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { eventually, storedReadings, storedRejections } from '../../test/fixtures/bus.js'
import { type NatsFixture, startNats } from '../../test/fixtures/nats.js'
import { type ServiceProcess, startService } from '../../test/fixtures/services.js'
import { violationsOf } from '../common/errors.js'
import { createLogger } from '../common/log.js'
import { connectNats, type NatsConnection, provisionBus } from '../common/nats.js'
import { freePort } from '../common/net.js'
import { buildOnnx } from '../inference/model/onnx.js'
import { normalReading, Rng, type SyntheticDevice, syntheticFleet } from '../inference/model/synthetic.js'
import { trainingSet, trainModel } from '../inference/model/train.js'
import { ModelRegistry } from '../inference/registry.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })

function reading(deviceId: string, seq: number, sensors: Record<string, number> = { temp: 21.5 }): Reading {
  return create(ReadingSchema, {
    deviceId,
    ts: timestampFromDate(new Date()),
    sensors,
    meta: { site: 'HYD-PLANT-2' },
    seq: BigInt(seq),
  })
}

describe('ingest: IngestService against a real nats-server', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let ingest: ServiceProcess
  let inferencePort: number
  const transports = (): [string, Transport][] => [
    ['Connect JSON over HTTP/1.1', createConnectTransport({ baseUrl: ingest.url, httpVersion: '1.1' })],
    ['gRPC', createGrpcTransport({ baseUrl: ingest.url })],
    ['gRPC-Web', createGrpcWebTransport({ baseUrl: ingest.url, httpVersion: '1.1' })],
  ]
  const client = () =>
    createClient(IngestService, createConnectTransport({ baseUrl: ingest.url, httpVersion: '2' }))

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    inferencePort = await freePort()
    ingest = await startService('ingest', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_INFERENCE_ADDR: `http://127.0.0.1:${inferencePort}`,
      VIGIL_INFERENCE_TIMEOUT_MS: '1000',
    })
  })
  after(async () => {
    await ingest?.stop()
    await nc?.drain()
    await nats?.stop()
  })
  beforeEach(async () => {
    const jsm = await jetstreamManager(nc)
    await jsm.streams.purge('TELEMETRY')
    await jsm.streams.purge('REJECTED')
  })

  it('stores a reading published over Connect, gRPC and gRPC-Web, answering after JetStream stored it', async () => {
    let seq = 0
    for (const [name, transport] of transports()) {
      const res = await createClient(IngestService, transport).publish({ reading: reading('rpc-1', ++seq) })
      assert.equal(res.eventId, `rpc-1:seq:${seq}`, name)
      // Answered only after the store: the reading is in the stream already.
      const { readings } = await storedReadings(nc)
      assert.ok(
        readings.some((r) => r.eventId === res.eventId),
        `${name}: not in the stream when answered`,
      )
    }
  })

  it('refuses an invalid reading with InvalidArgument and field violations, and keeps it', async () => {
    const bad = reading('', 1, { temp: Number.NaN })
    const err = await client()
      .publish({ reading: bad })
      .catch((e: unknown) => ConnectError.from(e))
    assert.ok(err instanceof ConnectError)
    assert.equal(err.code, Code.InvalidArgument)
    assert.deepEqual(violationsOf(err), [
      { field: 'device_id', description: 'is required' },
      { field: 'sensors["temp"]', description: 'must be a finite number' },
    ])
    const missing = await client()
      .publish({})
      .catch((e: unknown) => ConnectError.from(e))
    assert.ok(missing instanceof ConnectError)
    assert.deepEqual(violationsOf(missing), [{ field: 'reading', description: 'is required' }])
    const kept = await storedRejections(nc)
    assert.equal(kept.length, 1)
    assert.equal(kept[0]?.source, 'rpc:Publish')
    assert.equal(kept[0]?.reason, RejectReason.INVALID)
    assert.equal(kept[0]?.subject, 'telemetry.rejected.invalid')
  })

  it('flags a reading sent again as a duplicate and stores it once', async () => {
    const first = await client().publish({ reading: reading('dup-1', 1) })
    const again = await client().publish({ reading: reading('dup-1', 1) })
    assert.equal(first.duplicate, false)
    assert.equal(again.duplicate, true)
    assert.equal(again.eventId, first.eventId)
    const { readings } = await storedReadings(nc)
    assert.equal(readings.filter((r) => r.eventId === 'dup-1:seq:1').length, 1)
  })

  it('PublishBatch stores the valid readings and reports each refused or duplicate one by index', async () => {
    const readings = [
      reading('batch-1', 1),
      reading('batch-1', 2, { temp: Number.POSITIVE_INFINITY }),
      reading('batch-2', 1),
      reading('batch-1', 1),
      reading('bad id!', 1),
    ]
    const res = await client().publishBatch({ readings })
    assert.equal(res.accepted, 2)
    assert.deepEqual(res.eventIds, ['batch-1:seq:1', '', 'batch-2:seq:1', 'batch-1:seq:1', ''])
    assert.deepEqual(res.duplicateIndexes, [3])
    assert.deepEqual(
      res.rejections.map((r) => [r.index, r.reason, r.violations.map((v) => v.field)]),
      [
        [1, RejectReason.INVALID, ['sensors["temp"]']],
        [4, RejectReason.INVALID, ['device_id']],
      ],
    )
    const stored = await storedReadings(nc)
    assert.deepEqual(stored.readings.map((r) => r.eventId).sort(), ['batch-1:seq:1', 'batch-2:seq:1'])
    assert.equal((await storedRejections(nc)).length, 2)
  })

  it('PublishStream stores 10,000 readings in batches', async () => {
    async function* readings() {
      for (let i = 1; i <= 10_000; i++) yield { reading: reading(`stream-${i % 50}`, i) }
      yield { reading: reading('stream-x', 1, {}) }
    }
    const res = await client().publishStream(readings())
    assert.equal(res.accepted, 10_000)
    assert.equal(res.rejected, 1)
    assert.equal(res.rejections[0]?.index, 10_000)
    const stored = await storedReadings(nc)
    assert.equal(new Set(stored.readings.map((r) => r.eventId)).size, 10_000)
    // Readings trickle in one stream message at a time; the 5 ms linger still gathers them.
    assert.ok(stored.batches < 5_000, `${stored.batches} batches for 10,000 readings`)
  })

  it('coalesces concurrent Publish calls into shared batches', async () => {
    const calls = Array.from({ length: 300 }, (_, i) =>
      client().publish({ reading: reading(`co-${i % 3}`, i + 1) }),
    )
    await Promise.all(calls)
    const stored = await storedReadings(nc)
    assert.equal(stored.readings.length, 300)
    assert.ok(stored.batches < 300 / 3, `${stored.batches} JetStream publishes for 300 calls`)
  })

  it('stores the reading and says so when the synchronous inference is unavailable', async () => {
    const res = await client().publish({ reading: reading('infer-1', 1), infer: true })
    assert.equal(res.eventId, 'infer-1:seq:1')
    assert.equal(res.inference, undefined)
    assert.equal(res.inferenceFailure?.code, 'unavailable')
    await eventually(
      async () => (await storedReadings(nc)).readings.some((r) => r.eventId === 'infer-1:seq:1'),
      5_000,
      'the reading',
    )
  })

  it("returns the real inference service's verdict, and its refusal while no model exists", async () => {
    const inference = await startService(
      'inference',
      { VIGIL_NATS_URL: nats.url, VIGIL_BOOTSTRAP_ROWS: '0', VIGIL_INFERENCE_WORKER: 'false' },
      { port: inferencePort },
    )
    try {
      const [device] = syntheticFleet(1, 4) as [SyntheticDevice]
      const rng = new Rng(1)
      const refused = await client().publish({
        reading: reading(device.id, 1, normalReading(device, rng)),
        infer: true,
      })
      assert.equal(refused.eventId, `${device.id}:seq:1`, 'stored all the same')
      assert.equal(refused.inferenceFailure?.code, 'failed_precondition')
      assert.match(refused.inferenceFailure?.message ?? '', /no model is trained yet/)

      const rows = Array.from({ length: 300 }, (_, i) => ({ sensors: normalReading(device, rng), tsMs: i }))
      const stored = await (await ModelRegistry.open(nc)).store(
        buildOnnx(trainModel(trainingSet(rows, 'test'), { scope: 'fleet' })),
      )
      const inferenceClient = createClient(
        InferenceService,
        createConnectTransport({ baseUrl: inference.url, httpVersion: '2' }),
      )
      await inferenceClient.promoteModel({ name: 'fleet', version: stored.spec.version, alias: 'production' })

      const normal = await client().publish({
        reading: reading(device.id, 2, normalReading(device, rng)),
        infer: true,
      })
      assert.equal(normal.inferenceFailure, undefined)
      assert.equal(normal.inference?.label, 'OK')
      assert.equal(normal.inference?.eventId, `${device.id}:seq:2`)
      assert.deepEqual(
        normal.inference?.model,
        create(ModelRefSchema, { name: 'fleet', version: stored.spec.version }),
      )
      const sensors = normalReading(device, rng)
      sensors.vibration += 2 // about 16 standard deviations
      const spike = await client().publish({ reading: reading(device.id, 3, sensors), infer: true })
      assert.equal(spike.inference?.label, 'ALERT')
      assert.equal(spike.inference?.anomalies[0]?.name, 'vibration')
      assert.equal(spike.inference?.explain?.shapTop[0]?.name, 'vibration')
    } finally {
      await inference.stop()
    }
  })
})
