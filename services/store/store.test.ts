import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { create, toBinary } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { Registry } from 'prom-client'
import {
  InferenceBatchSchema,
  InferenceSchema,
  type Reading,
  ReadingSchema,
  RejectReason,
} from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { eventually, storedRejections } from '../../test/fixtures/bus.js'
import { openTestClickHouse } from '../../test/fixtures/clickhouse.js'
import { type NatsFixture, startNats } from '../../test/fixtures/nats.js'
import { tempDir } from '../../test/fixtures/process.js'
import { type ServiceProcess, startService } from '../../test/fixtures/services.js'
import { type ClickHouse, migrate, toDateTime64 } from '../common/clickhouse.js'
import { encodeReadingBatch } from '../common/codec.js'
import { createLogger } from '../common/log.js'
import { connectNats, type NatsConnection, provisionBus, rawSubject } from '../common/nats.js'
import { compactLatestTables } from './compaction.js'
import { clickhouseInsert, runWriters } from './consumers.js'
import { MIGRATIONS } from './migrations.js'
import { applyRetention } from './retention.js'
import { jsonEachRow } from './rows.js'
import type { InsertRows } from './writer.js'

const log = createLogger({ service: 'store', logLevel: 'silent' })
const T0 = Date.parse('2026-12-01T00:00:00Z')

function reading(device: number, i: number): Reading {
  return create(ReadingSchema, {
    eventId: `d${device}:seq:${i}`,
    deviceId: `d${device}`,
    ts: timestampFromMs(T0 + i * 1_000),
    sensors: { temp: 20 + (i % 7), humidity: 50 + (i % 3) },
    meta: { site: `site-${device % 3}`, fw: '1.0.7' },
    seq: BigInt(i),
    receivedAt: timestampFromMs(T0 + i * 1_000 + 5),
  })
}

async function count(ch: ClickHouse, sql: string): Promise<number> {
  const rows = await (await ch.client.query({ query: sql, format: 'JSONEachRow' })).json<{
    n: string | number
  }>()
  return Number(rows[0]?.n ?? 0)
}

const READING_BATCHES = 1_000
const READINGS = READING_BATCHES * 100

describe('store: JetStream → ClickHouse writer (embedded ClickHouse, real nats-server)', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let ch: ClickHouse

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'store', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    ch = await openTestClickHouse()
    await migrate(ch, MIGRATIONS, log)
  })
  after(async () => {
    await nc?.drain()
    await nats?.stop()
    await ch?.close()
  })

  it('stores each reading and inference once, through duplicates, a consumer restart and insert failures', async () => {
    const js = jetstream(nc)
    const jsm = await jetstreamManager(nc)
    // 100,000 readings of 20 devices in 1,000 batches; 10 batches sent twice with the same msgID
    // (the stream keeps one) and 5 sent again under a new batch id (the stream keeps both).
    const batches: { id: string; readings: Reading[] }[] = []
    for (let b = 0; b < READING_BATCHES; b++) {
      const readings = Array.from({ length: 100 }, (_, k) => reading((b * 100 + k) % 20, b * 100 + k))
      batches.push({ id: `batch-${b}`, readings })
    }
    const publish = async (id: string, readings: Reading[], partition: number) =>
      js.publish(rawSubject(partition), encodeReadingBatch(id, readings, 'test'), { msgID: id })
    for (const [b, batch] of batches.entries()) await publish(batch.id, batch.readings, b % 16)
    for (let b = 0; b < 10; b++) await publish(batches[b]!.id, batches[b]!.readings, b % 16)
    for (let b = 10; b < 15; b++) await publish(`again-${b}`, batches[b]!.readings, b % 16)
    // An inference for every reading, every tenth an anomaly.
    for (let b = 0; b < READING_BATCHES; b++) {
      const inferences = Array.from({ length: 100 }, (_, k) => {
        const r = reading((b * 100 + k) % 20, b * 100 + k)
        const alert = (b * 100 + k) % 10 === 0
        return create(InferenceSchema, {
          eventId: r.eventId,
          deviceId: r.deviceId,
          ts: r.ts,
          score: alert ? 0.95 : 0.1,
          label: alert ? 'ALERT' : 'OK',
          anomalies: alert ? [{ name: 'temp', severity: 'high', ratio: 9 }] : [],
          explain: { shapTop: [{ name: 'temp', contribution: 2.5, value: 26 }], spe: 3, speLimit: 1 },
          model: { name: 'fleet', version: 1 },
          features: r.sensors,
          inferredAt: r.receivedAt,
        })
      })
      const data = toBinary(
        InferenceBatchSchema,
        create(InferenceBatchSchema, { batchId: `inf-${b}`, inferences }),
      )
      await js.publish(`telemetry.inferred.${b % 16}`, data, { msgID: `inf-${b}` })
    }
    // One message that is not a batch at all.
    await js.publish(rawSubject(3), new TextEncoder().encode('not protobuf \u0000\u00ff'))

    // ClickHouse fails the first three inserts; the writer must lose nothing.
    let failuresLeft = 3
    const real = clickhouseInsert(ch)
    const flaky: InsertRows = async (table, text, rows, token) => {
      if (failuresLeft > 0) {
        failuresLeft--
        throw new Error('connection refused (injected)')
      }
      await real(table, text, rows, token)
    }
    const registry = new Registry()
    const first = new AbortController()
    const run1 = runWriters({
      js,
      jsm,
      insert: flaky,
      log,
      registry,
      signal: first.signal,
      maxRows: 20_000,
      lingerMs: 50,
    })
    await eventually(
      async () => (await count(ch, `SELECT count() AS n FROM ${ch.table('telemetry')}`)) >= 40_000,
      30_000,
      'a part of the readings',
    )
    // Restart the consumers mid-way.
    first.abort()
    await run1
    const second = new AbortController()
    const run2 = runWriters({
      js,
      jsm,
      insert: real,
      log,
      registry,
      signal: second.signal,
      maxRows: 20_000,
      lingerMs: 50,
    })
    try {
      await eventually(
        async () =>
          (await count(ch, `SELECT count(DISTINCT event_id) AS n FROM ${ch.table('telemetry')}`)) ===
            READINGS &&
          (await count(ch, `SELECT count(DISTINCT event_id) AS n FROM ${ch.table('inferences')}`)) ===
            READINGS,
        120_000,
        'every reading and inference',
      )
      const info = await jsm.consumers.info('TELEMETRY', 'store-telemetry')
      await eventually(
        async () => (await jsm.consumers.info('TELEMETRY', 'store-telemetry')).num_ack_pending === 0,
      )
      assert.equal(info.num_pending, 0)
      // …and the store lists dead letters for operators (counted by the fleet summary).
      await eventually(
        async () =>
          (await count(
            ch,
            `SELECT count() AS n FROM ${ch.table('rejected')} FINAL WHERE reason = 'poison'`,
          )) === 1,
        60_000,
        'the dead letter in the rejected table',
      )
    } finally {
      second.abort()
      await run2
    }

    // One row per event id in what queries read (FINAL folds re-inserted rows).
    assert.equal(await count(ch, `SELECT count() AS n FROM ${ch.table('telemetry')} FINAL`), READINGS)
    assert.equal(await count(ch, `SELECT count() AS n FROM ${ch.table('inferences')} FINAL`), READINGS)
    assert.equal(
      await count(ch, `SELECT count() AS n FROM ${ch.table('inferences')} FINAL WHERE label = 'ALERT'`),
      READINGS / 10,
    )
    const stored = await (
      await ch.client.query({
        query: `SELECT device_id, toString(ts) AS ts, sensors, meta, toString(seq) AS seq FROM ${ch.table('telemetry')} FINAL WHERE event_id = {id:String}`,
        query_params: { id: 'd7:seq:1207' },
        format: 'JSONEachRow',
      })
    ).json()
    assert.deepEqual(stored, [
      {
        device_id: 'd7',
        ts: '2026-12-01 00:20:07.000',
        sensors: { temp: 20 + (1207 % 7), humidity: 50 + (1207 % 3) },
        meta: { site: 'site-1', fw: '1.0.7' },
        seq: '1207',
      },
    ])

    // The one-minute rollup follows the inserts. It sums what was inserted, so the five batches
    // re-sent under new ids count twice there (FINAL folds them only in the raw table).
    const device = 'd3'
    const expected = batches
      .flatMap((batch, i) => (i >= 10 && i < 15 ? [...batch.readings, ...batch.readings] : batch.readings))
      .filter((r) => r.deviceId === device).length
    const rolled = await count(
      ch,
      `SELECT sum(count) AS n FROM ${ch.table('telemetry_1m')} WHERE device_id = '${device}' AND sensor = 'temp'`,
    )
    assert.equal(rolled, expected)
    const latest = await (
      await ch.client.query({
        query: `SELECT event_id, site, firmware FROM ${ch.table('device_latest')} FINAL WHERE device_id = 'd19'`,
        format: 'JSONEachRow',
      })
    ).json()
    assert.deepEqual(latest, [{ event_id: `d19:seq:${READINGS - 1}`, site: 'site-1', firmware: '1.0.7' }])

    // The poison message was dead-lettered, not retried forever; the inserts that failed were counted.
    const dead = (await storedRejections(nc)).filter((r) => r.reason === RejectReason.POISON)
    assert.equal(dead.length, 1)
    assert.equal(dead[0]?.source, 'consumer:store-telemetry')
    assert.match(dead[0]!.detail, /not a ReadingBatch/)
    // The three injected failures hit whichever writer inserted first: counted, by table.
    const failures = [
      ...(await registry.metrics()).matchAll(/^vigil_store_insert_failures_total\{table="\w+"\} (\d+)$/gm),
    ]
    assert.equal(
      failures.reduce((n, m) => n + Number(m[1]), 0),
      3,
    )
  })
})

describe('store service process', () => {
  it('migrates, sets retention, and writes what arrives on the bus', async () => {
    const nats = await startNats()
    const dir = tempDir('store')
    const nc = await connectNats({ service: 'store', natsUrl: nats.url }, log)
    let store: ServiceProcess | undefined
    try {
      store = await startService('store', {
        VIGIL_NATS_URL: nats.url,
        VIGIL_DATA_DIR: dir.path,
        VIGIL_RETENTION_DAYS: '7',
      })
      const readings = Array.from({ length: 500 }, (_, i) => reading(i % 5, i))
      await jetstream(nc).publish(rawSubject(0), encodeReadingBatch('proc-1', readings, 'test'), {
        msgID: 'proc-1',
      })
      await eventually(
        async () =>
          /vigil_store_rows_inserted_total\{table="telemetry",service="store"\} 500/.test(
            await (await fetch(`${store!.url}/metrics`)).text(),
          ),
        20_000,
        '500 rows inserted',
      )
      assert.match(store.output(), /"msg":"migration applied"/)
    } finally {
      await store?.stop()
      await nc.drain()
      await nats.stop()
    }
    assert.equal(await store?.exited, 0, store?.output())
    dir.remove()
  })

  it('sets the retention TTL on every table that expires', async () => {
    const ch = await openTestClickHouse()
    try {
      await migrate(ch, MIGRATIONS, log)
      await applyRetention(ch, 7)
      const ddl = await (
        await ch.client.query({
          query: `SHOW CREATE TABLE ${ch.table('telemetry')}`,
          format: 'TabSeparatedRaw',
        })
      ).text()
      assert.match(ddl, /TTL toDateTime\(ts\) \+ toIntervalDay\(7\)/)
    } finally {
      await ch.close()
    }
  })

  it('compacts the latest-state tables to one row per device, keeping the latest', async () => {
    const ch = await openTestClickHouse()
    try {
      await migrate(ch, MIGRATIONS, log)
      const insert = clickhouseInsert(ch)
      // Five inserts, out of time order, each with two readings of every device, the older one
      // first: five rows per device before merges, and the latest must be chosen by time.
      for (const round of [2, 5, 1, 4, 3]) {
        const { text, rows } = jsonEachRow(
          Array.from({ length: 100 }, (_, k) => {
            const d = k % 50
            const older = k < 50
            return {
              device_id: `c-${d}`,
              ts: toDateTime64(Date.UTC(2026, 0, 1, 0, round) - (older ? 30_000 : 0)),
              event_id: `c-${d}:${round}:${older ? 'a' : 'b'}`,
              sensors: { temp: older ? -round : round },
              meta: { site: 'x', fw: older ? 'old' : `1.${round}` },
              seq: round,
              received_at: toDateTime64(Date.now()),
            }
          }),
        )
        await insert('telemetry', text, rows, `compact-${round}`)
      }
      const rowsIn = async (table: string) =>
        Number(
          (
            await (
              await ch.client.query({
                query: `SELECT count() AS n FROM ${ch.table(table)}`,
                format: 'JSONEachRow',
              })
            ).json<{ n: string }>()
          )[0]?.n,
        )
      await compactLatestTables(ch)
      assert.equal(await rowsIn('device_latest'), 50, 'one row per device')
      assert.equal(await rowsIn('device_counts'), 50)
      const latest = await (
        await ch.client.query({
          query: `SELECT firmware, sensors['temp'] AS temp FROM ${ch.table('device_latest')} WHERE device_id = 'c-7'`,
          format: 'JSONEachRow',
        })
      ).json<{ firmware: string; temp: number }>()
      assert.deepEqual(latest, [{ firmware: '1.5', temp: 5 }])
      const counts = await (
        await ch.client.query({
          query: `SELECT readings FROM ${ch.table('device_counts')} WHERE device_id = 'c-7'`,
          format: 'JSONEachRow',
        })
      ).json<{ readings: string }>()
      assert.equal(Number(counts[0]?.readings), 10, 'counts are summed, not lost')
    } finally {
      await ch.close()
    }
  })
})
