import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError, createClient, type Transport } from '@connectrpc/connect'
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { ModelProtoSchema } from 'onnx-buf'
import { InferenceService, type InferRequest } from '../../gen/vigil/inference/v1/inference_pb.js'
import { ReadingBatchSchema, ReadingSchema } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { eventually, storedInferences, storedRejections } from '../../test/fixtures/bus.js'
import { type NatsFixture, startNats } from '../../test/fixtures/nats.js'
import { type ServiceProcess, startService } from '../../test/fixtures/services.js'
import { violationsOf } from '../common/errors.js'
import { createLogger } from '../common/log.js'
import { connectNats, type NatsConnection, provisionBus, rawSubject } from '../common/nats.js'
import { buildOnnx } from './model/onnx.js'
import { normalReading, Rng, type SyntheticDevice, syntheticFleet } from './model/synthetic.js'
import { trainingSet, trainModel } from './model/train.js'
import { ModelRegistry } from './registry.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })
const BOOTSTRAP_ROWS = 300

/** One ReadingBatch of a normal reading per listed device (seq numbers from `firstSeq` + 1); its event ids. */
async function publishNormal(
  nc: NatsConnection,
  partition: number,
  devices: SyntheticDevice[],
  rng: Rng,
  firstSeq: number,
): Promise<string[]> {
  const readings = devices.map((device, i) =>
    create(ReadingSchema, {
      eventId: `${device.id}:seq:${firstSeq + i + 1}`,
      deviceId: device.id,
      ts: timestampFromDate(new Date()),
      sensors: normalReading(device, rng),
      meta: { site: device.site },
      seq: BigInt(firstSeq + i + 1),
    }),
  )
  const batchId = `test-${firstSeq + devices.length}`
  await jetstream(nc).publish(
    rawSubject(partition),
    toBinary(ReadingBatchSchema, create(ReadingBatchSchema, { batchId, readings, source: 'test' })),
    { msgID: batchId },
  )
  return readings.map((r) => r.eventId)
}

describe('inference: InferenceService and the async worker against a real nats-server and ONNX Runtime', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let service: ServiceProcess
  let registry: ModelRegistry
  const fleet = syntheticFleet(6, 42, 2)
  const rng = new Rng(7)
  const client = (transport?: Transport) =>
    createClient(
      InferenceService,
      transport ?? createConnectTransport({ baseUrl: service.url, httpVersion: '2' }),
    )
  const request = (
    device: SyntheticDevice,
    sensors: Record<string, number>,
    extra: Partial<InferRequest> = {},
  ) => ({
    deviceId: device.id,
    features: sensors,
    context: { site: device.site },
    eventId: `${device.id}:${rng.next()}`,
    ...extra,
  })
  let published = 0
  function publishBatch(partition: number, rows: number): Promise<string[]> {
    const devices = Array.from({ length: rows }, () => fleet[published++ % fleet.length] as SyntheticDevice)
    return publishNormal(nc, partition, devices, rng, published - rows)
  }

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    registry = await ModelRegistry.open(nc)
    service = await startService('inference', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_BOOTSTRAP_ROWS: String(BOOTSTRAP_ROWS),
      // Device models are the next describe's subject; here every device stays on the fleet model.
      VIGIL_BOOTSTRAP_DEVICE_ROWS: '0',
      VIGIL_CANARY_PERCENT: '0',
    })
  })
  after(async () => {
    await service?.stop()
    await nc?.drain()
    await nats?.stop()
  })

  it('answers FailedPrecondition, saying how the first model will come, before any model exists', async () => {
    const device = fleet[0] as SyntheticDevice
    await assert.rejects(client().infer(request(device, normalReading(device, rng))), (err: ConnectError) => {
      assert.equal(err.code, Code.FailedPrecondition)
      assert.match(err.rawMessage, /bootstrap fleet model is trained from the first 300 readings/)
      assert.match(err.rawMessage, /vigil train/)
      return true
    })
    const { bootstrap, models } = await client().listModels({})
    assert.equal(models.length, 0)
    assert.equal(bootstrap?.state, 'waiting')
    assert.equal(bootstrap?.rowsNeeded, BOOTSTRAP_ROWS)
  })

  it('trains a bootstrap model from the first readings on the bus, then scores every reading asynchronously', async () => {
    const ids: string[] = []
    for (let i = 0; i < 8; i++) ids.push(...(await publishBatch(i % 4, 50)))
    await eventually(
      async () => (await client().listModels({})).models.some((m) => m.aliases.includes('production')),
      30_000,
      'the bootstrap model',
    )
    const { models, bootstrap } = await client().listModels({})
    assert.equal(bootstrap?.state, 'done')
    const fleetModel = models.find((m) => m.ref?.name === 'fleet')
    assert.equal(fleetModel?.source, 'bootstrap')
    assert.equal(fleetModel?.ref?.version, 1)
    assert.deepEqual(fleetModel?.aliases, ['production'])
    assert.ok(Number(fleetModel?.trainingRows) >= BOOTSTRAP_ROWS * 0.95)
    assert.ok((fleetModel?.features.length ?? 0) === 6)
    assert.ok(service.output().includes('bootstrap model trained and promoted to production'))

    await eventually(
      async () => {
        const { inferences } = await storedInferences(nc)
        const scored = new Set(inferences.map((i) => i.eventId))
        return ids.every((id) => scored.has(id))
      },
      30_000,
      'an inference for every published reading',
    )
    const { inferences } = await storedInferences(nc)
    assert.equal(
      new Set(inferences.map((i) => i.eventId)).size,
      inferences.length,
      'one inference per reading',
    )
    const ok = inferences.filter((i) => i.label === 'OK').length
    assert.ok(ok / inferences.length > 0.97, `${ok} of ${inferences.length} normal readings OK`)
    const first = inferences[0]
    assert.equal(first?.model?.name, 'fleet')
    assert.equal(Object.keys(first?.features ?? {}).length, 6)
    assert.ok(first?.explain && first.explain.shapTop.length === 3 && first.explain.t2Limit > 0)
  })

  it('Infer scores a normal and an anomalous reading and explains the anomaly, over Connect, gRPC and gRPC-Web', async () => {
    const device = fleet[1] as SyntheticDevice
    const transports: [string, Transport][] = [
      ['Connect', createConnectTransport({ baseUrl: service.url, httpVersion: '1.1' })],
      ['gRPC', createGrpcTransport({ baseUrl: service.url })],
      ['gRPC-Web', createGrpcWebTransport({ baseUrl: service.url, httpVersion: '1.1' })],
    ]
    for (const [name, transport] of transports) {
      const normal = await client(transport).infer(
        request(device, normalReading(device, rng), { eventId: 'e-1' }),
      )
      assert.equal(normal.label, 'OK', name)
      assert.equal(normal.eventId, 'e-1')
      assert.deepEqual(normal.anomalies, [])
      assert.equal(normal.model?.name, 'fleet')
      const sensors = normalReading(device, rng)
      sensors.pressure += 40 // about 13 standard deviations
      const spike = await client(transport).infer(request(device, sensors))
      assert.equal(spike.label, 'ALERT', name)
      assert.ok(spike.score > 0.75 && spike.score <= 1)
      assert.equal(spike.anomalies[0]?.name, 'pressure')
      assert.notEqual(spike.anomalies[0]?.severity, 'low')
      assert.equal(spike.explain?.shapTop[0]?.name, 'pressure')
      assert.equal(spike.explain?.shapTop[0]?.value, sensors.pressure)
    }
  })

  it('refuses bad input with InvalidArgument naming the field, and says which features are missing', async () => {
    const device = fleet[2] as SyntheticDevice
    const { humidity: _h, voltage: _v, ...partial } = normalReading(device, rng)
    await assert.rejects(client().infer(request(device, partial)), (err: ConnectError) => {
      assert.equal(err.code, Code.InvalidArgument)
      assert.deepEqual(
        violationsOf(err).map((v) => v.field),
        ['features["humidity"]', 'features["voltage"]'],
      )
      assert.match(violationsOf(err)[0]?.description ?? '', /missing: model fleet v1 needs it/)
      return true
    })
    await assert.rejects(
      client().infer(request(device, normalReading(device, rng), { deviceId: 'bad id!' })),
      (err) => {
        assert.equal(ConnectError.from(err).code, Code.InvalidArgument)
        assert.equal(violationsOf(err)[0]?.field, 'device_id')
        return true
      },
    )
    const many = Array.from({ length: 10_001 }, () => request(device, normalReading(device, rng)))
    await assert.rejects(client().inferBatch({ requests: many }), (err) => {
      assert.equal(ConnectError.from(err).code, Code.InvalidArgument)
      assert.equal(violationsOf(err)[0]?.field, 'requests')
      return true
    })
    const mixed = [request(device, normalReading(device, rng)), request(device, partial)]
    await assert.rejects(client().inferBatch({ requests: mixed }), (err) => {
      assert.equal(violationsOf(err)[0]?.field, 'requests[1].features["humidity"]')
      return true
    })
  })

  it('InferBatch scores 2,000 requests and answers in order', async () => {
    const requests = Array.from({ length: 2_000 }, (_, i) => {
      const device = fleet[i % fleet.length] as SyntheticDevice
      return request(device, normalReading(device, rng), { eventId: `b-${i}` })
    })
    const { results } = await client().inferBatch({ requests })
    assert.equal(results.length, 2_000)
    assert.deepEqual(
      results.map((r) => r.eventId),
      requests.map((r) => r.eventId),
    )
    assert.ok(results.filter((r) => r.label === 'OK').length > 1_900)
  })

  it('uses the most specific model: the device, then its site, then the fleet', async () => {
    const [a, b, c] = fleet as [SyntheticDevice, SyntheticDevice, SyntheticDevice]
    const train = (device: SyntheticDevice, scope: 'device' | 'site', key: string) => {
      const rows = Array.from({ length: 300 }, (_, i) => ({
        sensors: normalReading(device, rng),
        tsMs: i * 1000,
      }))
      return buildOnnx(trainModel(trainingSet(rows, 'test'), { scope, scopeKey: key }))
    }
    const deviceModel = await registry.store(train(a, 'device', a.id))
    const siteModel = await registry.store(train(b, 'site', b.site))
    for (const m of [deviceModel, siteModel]) {
      const res = await client().promoteModel({
        name: m.spec.name,
        version: m.spec.version,
        alias: 'production',
      })
      assert.equal(res.previousVersion, 0)
      assert.deepEqual(res.model?.aliases, ['production'])
    }
    const used = async (device: SyntheticDevice, site = device.site) =>
      (await client().infer(request(device, normalReading(device, rng), { context: { site } }))).model?.name
    assert.equal(await used(a), `device-${a.id}`)
    assert.equal(await used(b), `site-${b.site}`)
    assert.equal(await used(c, 'elsewhere'), 'fleet')
    const got = await client().getModel({ name: `device-${a.id}` })
    assert.equal(got.model?.scopeKey, a.id)
    assert.equal(got.model?.source, 'test')
  })

  it('swaps models under load without failing or dropping a request, and rolls back', async () => {
    const v2 = await registry.store(
      buildOnnx(
        trainModel(
          trainingSet(
            fleet.flatMap((d) =>
              Array.from({ length: 100 }, (_, i) => ({ sensors: normalReading(d, rng), tsMs: i })),
            ),
            'test',
          ),
          { scope: 'fleet' },
        ),
      ),
    )
    assert.equal(v2.spec.version, 2)
    const device = fleet[5] as SyntheticDevice
    const elsewhere = { context: { site: 'elsewhere' } } // no site model: the fleet's serves
    // Each answer with the time its request was sent: a request sent after PromoteModel answered
    // must get v2 (the server applies an alias before it answers), one sent after RollbackModel
    // answered v1. Requests sent before are in flight during the swap and may get either.
    const seen: { sentAt: number; version: number }[] = []
    let failures = 0
    let running = true
    const loop = async () => {
      while (running) {
        const sentAt = performance.now()
        try {
          const res = await client().infer(request(device, normalReading(device, rng), elsewhere))
          seen.push({ sentAt, version: res.model?.version ?? -1 })
        } catch {
          failures++
        }
      }
    }
    const loops = Array.from({ length: 64 }, loop)
    await new Promise((r) => setTimeout(r, 300))
    const promoted = await client().promoteModel({ name: 'fleet', version: 2, alias: 'production' })
    const promotedAt = performance.now()
    assert.equal(promoted.previousVersion, 1)
    await new Promise((r) => setTimeout(r, 300))
    const rollbackSentAt = performance.now()
    const rolled = await client().rollbackModel({ name: 'fleet' })
    const rolledAt = performance.now()
    assert.equal(rolled.previousVersion, 2)
    assert.equal(rolled.model?.ref?.version, 1)
    await new Promise((r) => setTimeout(r, 300))
    running = false
    await Promise.all(loops)
    assert.equal(failures, 0)
    assert.ok(seen.length > 200, `${seen.length} requests`)
    const between = seen.filter((s) => s.sentAt > promotedAt && s.sentAt < rollbackSentAt)
    const after = seen.filter((s) => s.sentAt > rolledAt)
    assert.ok(between.length > 20 && after.length > 20, `${between.length} and ${after.length} requests`)
    assert.deepEqual(
      [...new Set(between.map((s) => s.version))],
      [2],
      'v2 between the promotion and the rollback',
    )
    assert.deepEqual([...new Set(after.map((s) => s.version))], [1], 'v1 after the rollback')
  })

  it('refuses a model that cannot load; the previous version keeps serving', async () => {
    // A file ONNX Runtime cannot run: a real model with an operator that does not exist.
    const rows = Array.from({ length: 300 }, (_, i) => ({
      sensors: normalReading(fleet[0] as SyntheticDevice, rng),
      tsMs: i,
    }))
    const good = buildOnnx(trainModel(trainingSet(rows, 'test'), { scope: 'fleet' }))
    const broken = fromBinary(ModelProtoSchema, good)
    const node = broken.graph?.node[0]
    if (node) node.opType = 'NoSuchOperator'
    const stored = await registry.store(toBinary(ModelProtoSchema, broken))
    await assert.rejects(
      client().promoteModel({ name: 'fleet', version: stored.spec.version, alias: 'production' }),
      (err: ConnectError) => {
        assert.equal(err.code, Code.FailedPrecondition)
        assert.match(err.rawMessage, /cannot serve: ONNX Runtime cannot use this model: .*NoSuchOperator/)
        return true
      },
    )
    // Pointing the alias at it behind the service's back: the watch refuses it too.
    await registry.setAlias('fleet', 'production', stored.spec.version)
    await eventually(async () => service.output().includes('model refused'), 10_000, 'the refusal in the log')
    const device = fleet[3] as SyntheticDevice
    const res = await client().infer(
      request(device, normalReading(device, rng), { context: { site: 'elsewhere' } }),
    )
    assert.equal(res.model?.version, 1)
    await registry.setAlias('fleet', 'production', 1)
    await assert.rejects(
      client().promoteModel({ name: 'fleet', version: 77, alias: 'production' }),
      (err) => {
        assert.equal(ConnectError.from(err).code, Code.NotFound)
        return true
      },
    )
    await assert.rejects(client().promoteModel({ name: 'fleet', version: 1, alias: 'beta' }), (err) => {
      assert.equal(violationsOf(err)[0]?.field, 'alias')
      return true
    })
  })

  it('terminates a batch that does not decode and keeps it as a dead letter; later batches still flow', async () => {
    await jetstream(nc).publish(rawSubject(3), new Uint8Array([0xff, 0xff, 0xff, 0x01]), {
      msgID: 'garbage-1',
    })
    const ids = await publishBatch(3, 20)
    await eventually(
      async () => (await storedRejections(nc)).some((r) => r.source === 'consumer:inference'),
      20_000,
      'the dead letter',
    )
    await eventually(
      async () => {
        const scored = new Set((await storedInferences(nc)).inferences.map((i) => i.eventId))
        return ids.every((id) => scored.has(id))
      },
      20_000,
      'the next batch scored',
    )
  })

  it('a second process shares the async work; every reading is scored once', async () => {
    const jsm = await jetstreamManager(nc)
    const waiting = async () => (await jsm.consumers.info('TELEMETRY', 'inference')).num_waiting
    const alone = await waiting()
    const second = await startService('inference', { VIGIL_NATS_URL: nats.url, VIGIL_BOOTSTRAP_ROWS: '0' })
    try {
      // Both processes have pull requests waiting on the shared durable before the batches come.
      await eventually(async () => (await waiting()) > alone, 10_000, 'pull requests from both processes')
      const ids: string[] = []
      for (let i = 0; i < 40; i++) ids.push(...(await publishBatch(i % 4, 25)))
      await eventually(
        async () => {
          const scored = new Set((await storedInferences(nc)).inferences.map((i) => i.eventId))
          return ids.every((id) => scored.has(id))
        },
        30_000,
        'every reading scored',
      )
      const { inferences } = await storedInferences(nc)
      assert.equal(new Set(inferences.map((i) => i.eventId)).size, inferences.length)
      const asyncScored = async (s: ServiceProcess) => {
        const text = await (await fetch(`${s.url}/metrics`)).text()
        return [...text.matchAll(/^vigil_inference_readings_total\{[^}]*path="async"[^}]*\} (\d+)/gm)].reduce(
          (a, m) => a + Number(m[1]),
          0,
        )
      }
      assert.ok((await asyncScored(second)) > 0, `the second process scored none:\n${second.output()}`)
      assert.ok((await asyncScored(service)) > 0, 'the first process scored some')
      // Consumer lag for Prometheus, read from the server at scrape time: nothing left to do now.
      const text = await (await fetch(`${service.url}/metrics`)).text()
      assert.match(text, /^vigil_consumer_pending\{[^}]*durable="inference"[^}]*\} 0$/m)
      assert.match(text, /^vigil_consumer_ack_pending\{[^}]*stream="TELEMETRY"[^}]*\} \d+$/m)
    } finally {
      await second.stop()
    }
  })
})

describe('inference: device bootstrap models', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let service: ServiceProcess
  const fleet = syntheticFleet(4, 5, 1)
  const rng = new Rng(11)
  let seq = 0
  function publishRound(rowsPerDevice: number): Promise<string[]> {
    const devices = fleet.flatMap((device) => Array.from({ length: rowsPerDevice }, () => device))
    seq += devices.length
    return publishNormal(nc, 0, devices, rng, seq - devices.length)
  }

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    service = await startService('inference', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_BOOTSTRAP_ROWS: '100',
      VIGIL_BOOTSTRAP_DEVICE_ROWS: '60',
      VIGIL_BOOTSTRAP_DEVICE_MODELS: '3',
      VIGIL_CANARY_PERCENT: '0',
    })
  })
  after(async () => {
    await service?.stop()
    await nc?.drain()
    await nats?.stop()
  })

  it('trains a model of its own for each device from its first readings, up to the configured number', async () => {
    for (let i = 0; i < 4; i++) await publishRound(20)
    const client = createClient(
      InferenceService,
      createConnectTransport({ baseUrl: service.url, httpVersion: '2' }),
    )
    await eventually(
      async () =>
        (await client.listModels({})).models.filter((m) => m.ref?.name.startsWith('device-')).length === 3,
      30_000,
      'three device models',
    )
    const devices = (await client.listModels({})).models.filter((m) => m.ref?.name.startsWith('device-'))
    for (const m of devices) {
      assert.equal(m.source, 'bootstrap')
      assert.equal(Number(m.trainingRows), 60)
      assert.deepEqual(m.aliases, ['production'])
    }
    // Later readings of those devices are scored by their own model; the fourth stays on the fleet's.
    const later = new Set(await publishRound(1))
    await eventually(
      async () => (await storedInferences(nc)).inferences.filter((i) => later.has(i.eventId)).length === 4,
      30_000,
      'the inferences of the last round',
    )
    const byDevice = new Map(
      (await storedInferences(nc)).inferences
        .filter((i) => later.has(i.eventId))
        .map((i) => [i.deviceId, i.model?.name]),
    )
    const own = [...byDevice].filter(([device, model]) => model === `device-${device}`)
    assert.equal(own.length, 3, JSON.stringify([...byDevice]))
    assert.equal([...byDevice.values()].filter((m) => m === 'fleet').length, 1)
    const metrics = await (await fetch(`${service.url}/metrics`)).text()
    assert.match(
      metrics,
      /vigil_inference_bootstrap_models_total\{scope="device",outcome="promoted",service="inference"\} 3/,
    )
  })
})
