import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { create, toBinary } from '@bufbuild/protobuf'
import { durationFromMs, timestampFromMs } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createGrpcTransport } from '@connectrpc/connect-node'
import { createConnectTransport as createWebTransport } from '@connectrpc/connect-web'
import { jetstream } from '@nats-io/jetstream'
import { QueryService } from '../../gen/vigil/query/v1/query_pb.js'
import {
  type Inference,
  InferenceBatchSchema,
  InferenceSchema,
  type Reading,
  ReadingSchema,
} from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { eventually } from '../../test/fixtures/bus.js'
import { type NatsFixture, startNats } from '../../test/fixtures/nats.js'
import { tempDir } from '../../test/fixtures/process.js'
import { type ServiceProcess, startService } from '../../test/fixtures/services.js'
import { encodeReadingBatch } from '../common/codec.js'
import { violationsOf } from '../common/errors.js'
import { createLogger } from '../common/log.js'
import { connectNats, type NatsConnection, provisionBus, rawSubject } from '../common/nats.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })
const DEVICES = 12
const PER_DEVICE = 300
// Readings start 2 hours ago, one every 10 s per device.
const T0 = Math.floor((Date.now() - 2 * 3600_000) / 60_000) * 60_000

function reading(d: number, i: number): Reading {
  const ms = T0 + i * 10_000
  return create(ReadingSchema, {
    eventId: `q${d}:seq:${i}`,
    deviceId: `q${d}`,
    ts: timestampFromMs(ms),
    sensors: { temp: 20 + ((i * 7 + d) % 13) / 2, humidity: 40 + (i % 5) },
    meta: { site: d % 2 === 0 ? 'north' : 'south', fw: `1.${d}` },
    seq: BigInt(i),
    receivedAt: timestampFromMs(Date.now()),
  })
}

function inference(r: Reading, i: number): Inference {
  const label = i % 50 === 0 ? 'ALERT' : i % 25 === 0 ? 'WARN' : 'OK'
  return create(InferenceSchema, {
    eventId: r.eventId,
    deviceId: r.deviceId,
    ts: r.ts,
    score: label === 'ALERT' ? 0.9 : label === 'WARN' ? 0.6 : 0.1,
    label,
    anomalies: label === 'OK' ? [] : [{ name: 'temp', severity: label === 'ALERT' ? 'high' : 'medium' }],
    model: { name: 'fleet', version: 1 },
    features: r.sensors,
    inferredAt: timestampFromMs(Date.now()),
  })
}

describe('query: QueryService over the store (embedded ClickHouse, real nats-server)', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let query: ServiceProcess
  const dir = tempDir('query')
  const all: Reading[] = []
  const client = () => createClient(QueryService, createGrpcTransport({ baseUrl: query.url }))

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    query = await startService('query', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_DATA_DIR: dir.path,
      VIGIL_STORE_LINGER_MS: '50',
    })
    const js = jetstream(nc)
    for (let d = 0; d < DEVICES; d++) {
      const readings = Array.from({ length: PER_DEVICE }, (_, i) => reading(d, i))
      all.push(...readings)
      await js.publish(rawSubject(d % 16), encodeReadingBatch(`qb-${d}`, readings, 'test'), {
        msgID: `qb-${d}`,
      })
      const inferences = readings.map((r, i) => inference(r, i))
      const data = toBinary(
        InferenceBatchSchema,
        create(InferenceBatchSchema, { batchId: `qi-${d}`, inferences }),
      )
      await js.publish(`telemetry.inferred.${d % 16}`, data, { msgID: `qi-${d}` })
    }
    await eventually(
      async () =>
        (await client().getFleetSummary({})).inferencesByLabel.OK === BigInt(DEVICES * (PER_DEVICE - 12)),
      30_000,
      'everything stored',
    )
  })
  after(async () => {
    await query?.stop()
    await nc?.drain()
    await nats?.stop()
    dir.remove()
  })

  it('lists devices with site, firmware, latest label and readings; filters, sorts and pages', async () => {
    const first = await client().listDevices({ pageSize: 5 })
    assert.equal(first.total, BigInt(DEVICES))
    assert.equal(first.devices.length, 5)
    assert.deepEqual(
      first.devices.map((d) => d.deviceId),
      ['q0', 'q1', 'q10', 'q11', 'q2'],
    )
    assert.equal(first.nextPageToken, '5')
    const q1 = first.devices[1]!
    assert.equal(q1.site, 'south')
    assert.equal(q1.firmware, '1.1')
    assert.equal(q1.readings, BigInt(PER_DEVICE))
    assert.equal(q1.latestLabel, 'OK')
    assert.equal(q1.online, false, 'last reading is over an hour old')
    const rest = await client().listDevices({ pageSize: 5, pageToken: first.nextPageToken })
    assert.equal(rest.devices[0]?.deviceId, 'q3')
    const north = await client().listDevices({ site: 'north', orderBy: '-device_id' })
    assert.equal(north.total, BigInt(DEVICES / 2))
    assert.equal(north.devices[0]?.deviceId, 'q8')
    const hostile = await client().listDevices({
      search: "' OR 1=1 --",
      site: "north'; DROP TABLE telemetry",
    })
    assert.equal(hostile.total, 0n)
    const err = await client()
      .listDevices({ orderBy: 'device_id; DROP TABLE x' })
      .catch((e: unknown) => ConnectError.from(e))
    assert.ok(err instanceof ConnectError)
    assert.equal(err.code, Code.InvalidArgument)
    assert.equal(violationsOf(err)[0]?.field, 'order_by')
  })

  it('answers the latest reading and inference, NotFound for an unknown device, InvalidArgument for a bad id', async () => {
    const latest = await client().getLatest({ deviceId: 'q4' })
    assert.equal(latest.reading?.eventId, `q4:seq:${PER_DEVICE - 1}`)
    assert.deepEqual(latest.reading?.sensors, reading(4, PER_DEVICE - 1).sensors)
    assert.equal(latest.inference?.eventId, `q4:seq:${PER_DEVICE - 1}`)
    const missing = await client()
      .getLatest({ deviceId: 'nobody' })
      .catch((e: unknown) => ConnectError.from(e))
    assert.equal((missing as ConnectError).code, Code.NotFound)
    const hostile = await client()
      .getLatest({ deviceId: "q1' OR '1'='1" })
      .catch((e: unknown) => ConnectError.from(e))
    assert.equal((hostile as ConnectError).code, Code.InvalidArgument)
    assert.equal(violationsOf(hostile)[0]?.field, 'device_id')
  })

  it('answers QueryRange raw and bucketed (raw rows and the one-minute rollup) with the aggregates of the source', async () => {
    const device = 'q5'
    const source = all.filter((r) => r.deviceId === device)
    const start = timestampFromMs(T0)
    const end = timestampFromMs(T0 + PER_DEVICE * 10_000)
    const raw = await client().queryRange({ deviceId: device, sensors: ['temp'], start, end })
    assert.equal(raw.source, 'raw')
    assert.equal(raw.series.length, 1)
    assert.deepEqual(
      raw.series[0]!.points.map((p) => p.value),
      source.map((r) => r.sensors.temp),
    )
    for (const [stepMs, expectSource] of [
      [30_000, 'telemetry'],
      [300_000, 'rollup_1m'],
    ] as const) {
      const res = await client().queryRange({ deviceId: device, start, end, step: durationFromMs(stepMs) })
      assert.equal(res.source, expectSource)
      const temp = res.series.find((s) => s.sensor === 'temp')!
      const buckets = new Map<number, number[]>()
      for (const r of source) {
        const ms = Number(r.ts!.seconds) * 1000
        const b = Math.floor(ms / stepMs) * stepMs
        buckets.set(b, [...(buckets.get(b) ?? []), r.sensors.temp!])
      }
      assert.equal(temp.points.length, buckets.size, `step ${stepMs}`)
      for (const p of temp.points) {
        const values = buckets.get(Number(p.ts!.seconds) * 1000)!
        assert.ok(values, `bucket ${p.ts!.seconds}`)
        assert.equal(p.count, BigInt(values.length))
        assert.equal(p.min, Math.min(...values))
        assert.equal(p.max, Math.max(...values))
        assert.ok(Math.abs(p.avg - values.reduce((a, b) => a + b, 0) / values.length) < 1e-9)
        assert.ok(p.p95 >= p.min && p.p95 <= p.max)
      }
    }
    const tooMany = await client()
      .queryRange({ deviceId: device, start, end, step: durationFromMs(1) })
      .catch((e: unknown) => ConnectError.from(e))
    assert.equal(violationsOf(tooMany)[0]?.field, 'step')
    const backwards = await client()
      .queryRange({ deviceId: device, start: end, end: start })
      .catch((e: unknown) => ConnectError.from(e))
    assert.equal(violationsOf(backwards)[0]?.field, 'start')
  })

  it('lists exactly the injected anomalies, newest first, with filters and paging', async () => {
    const start = timestampFromMs(T0 - 60_000)
    const everything = await client().listAnomalies({ start, pageSize: 1000 })
    // Per device: i % 25 === 0 → 12 of 300 (6 ALERT, 6 WARN).
    assert.equal(everything.anomalies.length, DEVICES * 12)
    const times = everything.anomalies.map((a) => Number(a.ts!.seconds))
    assert.deepEqual(
      times,
      [...times].sort((a, b) => b - a),
    )
    const alerts = await client().listAnomalies({ start, minLabel: 'ALERT', pageSize: 1000 })
    assert.equal(alerts.anomalies.length, DEVICES * 6)
    const one = await client().listAnomalies({ start, deviceId: 'q2', pageSize: 5 })
    assert.equal(one.anomalies.length, 5)
    assert.ok(one.anomalies.every((a) => a.deviceId === 'q2'))
    assert.equal(one.nextPageToken, '5')
    const south = await client().listAnomalies({ start, site: 'south', pageSize: 1000 })
    assert.equal(south.anomalies.length, (DEVICES / 2) * 12)
  })

  it('exports stored readings of a device, a site or the fleet, oldest first, once each, in chunks', async () => {
    const start = timestampFromMs(T0)
    const collect = async (req: Parameters<ReturnType<typeof client>['exportReadings']>[0]) => {
      const out: Reading[] = []
      let truncated = false
      for await (const chunk of client().exportReadings(req)) {
        out.push(...chunk.readings)
        truncated ||= chunk.truncated
      }
      return { out, truncated }
    }
    const device = await collect({ deviceId: 'q3', start })
    assert.equal(device.out.length, PER_DEVICE)
    assert.deepEqual(
      device.out.map((r) => r.eventId),
      all.filter((r) => r.deviceId === 'q3').map((r) => r.eventId),
    )
    assert.deepEqual(device.out[5]?.sensors, all.find((r) => r.eventId === 'q3:seq:5')?.sensors)
    const fleet = await collect({ start })
    assert.equal(fleet.out.length, DEVICES * PER_DEVICE)
    assert.equal(new Set(fleet.out.map((r) => r.eventId)).size, fleet.out.length)
    const times = fleet.out.map((r) => Number(r.ts?.seconds))
    assert.ok(
      times.every((t, i) => i === 0 || t >= (times[i - 1] as number)),
      'oldest first',
    )
    const site = all[0]?.meta.site ?? ''
    const bySite = await collect({ site, start })
    assert.equal(bySite.out.length, all.filter((r) => r.meta.site === site).length)
    const cut = await collect({ start, limit: 100 })
    assert.equal(cut.out.length, 100)
    assert.equal(cut.truncated, true)
    await assert.rejects(collect({ deviceId: 'q1', site: 'x', start }), (err) => {
      assert.equal(violationsOf(err)[0]?.field, 'site')
      return true
    })
    await assert.rejects(collect({ deviceId: "q1' OR 1=1 --", start }), (err) => {
      assert.equal(violationsOf(err)[0]?.field, 'device_id')
      return true
    })
    await assert.rejects(collect({}), (err) => {
      assert.equal(violationsOf(err)[0]?.field, 'start')
      return true
    })
  })

  it('sums up the fleet', async () => {
    const summary = await client().getFleetSummary({ window: durationFromMs(3 * 3600_000) })
    assert.equal(summary.devicesTotal, BigInt(DEVICES))
    assert.equal(summary.devicesOnline, 0n)
    assert.equal(summary.inferencesByLabel.ALERT, BigInt(DEVICES * 6))
    assert.equal(summary.inferencesByLabel.WARN, BigInt(DEVICES * 6))
    assert.equal(summary.readingsInWindow, BigInt(DEVICES * PER_DEVICE))
  })

  it('streams new readings to a Connect-Web (fetch) client and a gRPC client', async () => {
    const web = createClient(QueryService, createWebTransport({ baseUrl: query.url }))
    const grpc = client()
    const abort = new AbortController()
    const collect = async (c: typeof web, n: number) => {
      const got: string[] = []
      for await (const ev of c.watch({ deviceIds: ['live-1'], readings: true }, { signal: abort.signal })) {
        if (ev.event.case === 'reading') got.push(ev.event.value.eventId)
        if (got.length === n) break
      }
      return got
    }
    const fromWeb = collect(web, 3)
    const fromGrpc = collect(grpc, 3)
    await new Promise((r) => setTimeout(r, 500))
    const readings = [1, 2, 3].map((i) =>
      create(ReadingSchema, {
        eventId: `live-1:seq:${i}`,
        deviceId: 'live-1',
        ts: timestampFromMs(Date.now()),
        sensors: { t: i },
      }),
    )
    await jetstream(nc).publish(
      rawSubject(2),
      encodeReadingBatch('live-b', [reading(0, 9999), ...readings], 'test'),
    )
    assert.deepEqual(await fromWeb, ['live-1:seq:1', 'live-1:seq:2', 'live-1:seq:3'])
    assert.deepEqual(await fromGrpc, ['live-1:seq:1', 'live-1:seq:2', 'live-1:seq:3'])
    abort.abort()
  })

  it('drops the oldest events for a client that does not read, and says how many', async () => {
    // gRPC over HTTP/2: flow control stops the server's writes while the client does not read.
    const stream = client()
      .watch({ deviceIds: ['flood'], readings: true })
      [Symbol.asyncIterator]()
    await new Promise((r) => setTimeout(r, 300))
    const js = jetstream(nc)
    // 20 MB of events: more than socket buffers hold, so the server has to drop.
    for (let b = 0; b < 40; b++) {
      const batch = Array.from({ length: 250 }, (_, i) =>
        create(ReadingSchema, {
          eventId: `flood:${b}:${i}`,
          deviceId: 'flood',
          ts: timestampFromMs(Date.now()),
          sensors: { t: i },
          meta: { padding: 'x'.repeat(2_000) },
        }),
      )
      await js.publish(rawSubject(5), encodeReadingBatch(`flood-${b}`, batch, 'test'))
    }
    await new Promise((r) => setTimeout(r, 1_000))
    let received = 0
    let dropped = 0n
    for (;;) {
      const next = await stream.next()
      if (next.done) break
      if (next.value.event.case === 'reading') received++
      dropped = next.value.dropped
      if (received + Number(dropped) >= 10_000) break
    }
    await stream.return?.()
    assert.ok(dropped > 0n, 'a slow client loses the oldest events')
    assert.equal(received + Number(dropped), 10_000, 'every event is either delivered or counted as dropped')
  })
})
