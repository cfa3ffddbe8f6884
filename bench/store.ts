import { create, toBinary } from '@bufbuild/protobuf'
import { durationFromMs, timestampFromMs } from '@bufbuild/protobuf/wkt'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { Registry } from 'prom-client'
import {
  GetFleetSummaryRequestSchema,
  GetLatestRequestSchema,
  ListAnomaliesRequestSchema,
  ListDevicesRequestSchema,
  QueryRangeRequestSchema,
} from '../gen/vigil/query/v1/query_pb.js'
import {
  InferenceBatchSchema,
  InferenceSchema,
  type Reading,
  ReadingSchema,
} from '../gen/vigil/telemetry/v1/telemetry_pb.js'
import {
  type ClickHouse,
  DEFAULT_READ_LIMITS,
  migrate,
  openClickHouse,
  readSettings,
} from '../services/common/clickhouse.js'
import { encodeReadingBatch } from '../services/common/codec.js'
import { createLogger } from '../services/common/log.js'
import { connectNats, provisionBus, rawSubject } from '../services/common/nats.js'
import type { QueryContext } from '../services/query/context.js'
import { getFleetSummary } from '../services/query/routes/get-fleet-summary.js'
import { getLatest } from '../services/query/routes/get-latest.js'
import { listAnomalies } from '../services/query/routes/list-anomalies.js'
import { listDevices } from '../services/query/routes/list-devices.js'
import { queryRange } from '../services/query/routes/query-range.js'
import { compactLatestTables, runCompactor } from '../services/store/compaction.js'
import { clickhouseInsert, runWriters, writerInserts } from '../services/store/consumers.js'
import { MIGRATIONS } from '../services/store/migrations.js'
import { jsonEachRow, telemetryRow } from '../services/store/rows.js'
import { startNats } from '../test/fixtures/nats.js'
import { tempDir } from '../test/fixtures/process.js'
import { fmt, say } from './report.js'

const log = createLogger({ service: 'store', logLevel: 'silent' })

export interface StoreBenchOptions {
  rows: number
  devices: number
}

const DAY = 86_400_000

/** Reading i of the synthetic fleet: devices round-robin, timestamps spread over the last day. */
function reading(i: number, opts: StoreBenchOptions, start: number): Reading {
  const device = i % opts.devices
  const ms = start + Math.floor((i / opts.rows) * DAY)
  return create(ReadingSchema, {
    eventId: `b${device}:seq:${i}`,
    deviceId: `bench-${device}`,
    ts: timestampFromMs(ms),
    sensors: { temp: 20 + (i % 17) / 3, humidity: 40 + (i % 11), vibration: (i % 7) / 100 },
    meta: { site: `site-${device % 20}`, fw: '1.0.7' },
    seq: BigInt(i),
    receivedAt: timestampFromMs(ms + 20),
  })
}

async function timeIt<T>(fn: () => Promise<T>): Promise<number> {
  const t = process.hrtime.bigint()
  await fn()
  return Number(process.hrtime.bigint() - t) / 1e6
}

async function count(ch: ClickHouse, table: string): Promise<number> {
  const r = await (
    await ch.client.query({ query: `SELECT count() AS n FROM ${ch.table(table)}`, format: 'JSONEachRow' })
  ).json<{ n: string }>()
  return Number(r[0]?.n ?? 0)
}

/** Waits until ClickHouse runs no merge (at most a minute). */
async function quiet(ch: ClickHouse): Promise<void> {
  const until = Date.now() + 60_000
  while (Date.now() < until) {
    const r = await (
      await ch.client.query({ query: 'SELECT count() AS n FROM system.merges', format: 'JSONEachRow' })
    ).json<{ n: string }>()
    if (Number(r[0]?.n ?? 0) === 0) return
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

/**
 * `npm run bench -- store`: bare inserts into embedded ClickHouse, the writer from a pre-filled
 * stream into the same schema, and the Query API's SQL on the result, in one run.
 */
export async function benchStore(opts: StoreBenchOptions): Promise<void> {
  say(`store benchmark: ${fmt(opts.rows)} readings from ${fmt(opts.devices)} devices over one day`)
  const dir = tempDir('bench-store')
  const nats = await startNats()
  const nc = await connectNats({ service: 'store', natsUrl: nats.url }, log)
  await provisionBus(nc, log, { maxAgeMs: 7 * DAY })
  const start = Date.now() - DAY
  const common = { clickhouseUser: 'default', clickhousePassword: '', dataDir: dir.path }
  const bare = await openClickHouse(
    { ...common, clickhouseDatabase: 'bare', clickhouseUrl: process.env.VIGIL_CLICKHOUSE_URL },
    log,
  )
  const ch = await openClickHouse(
    { ...common, clickhouseDatabase: 'vigil', clickhouseUrl: process.env.VIGIL_CLICKHOUSE_URL },
    log,
  )
  try {
    await migrate(bare, MIGRATIONS, log)
    await migrate(ch, MIGRATIONS, log)
    const chunk = 20_000

    say('1/3 bare inserts of 20,000 rows …')
    // Rows of readings [at, at + chunk) as the client's row objects.
    const rowsAt = (at: number) => {
      const rows: ReturnType<typeof telemetryRow>[] = []
      for (let i = at; i < Math.min(opts.rows, at + chunk); i++)
        rows.push(telemetryRow(reading(i, opts, start)))
      return rows
    }
    // Inserts back to back, the next chunk's rows made while one is inserted (as the writer decodes
    // messages while its insert runs); rows/s over the wall time. Timing only the insert calls with
    // pauses between them (as this benchmark did before) lets ClickHouse merge in the pauses,
    // outside the timed calls, which flatters the bare rate against a writer that has no pauses
    // (measured on 600,000 rows: 41–45k rows/s timed so, 32–34k back to back).
    const backToBack = async (
      rows: number,
      insert: (r: ReturnType<typeof rowsAt>, at: number) => Promise<unknown>,
    ) => {
      let next = rowsAt(0)
      const wallMs = await timeIt(async () => {
        for (let at = 0; at < rows; at += chunk) {
          const current = next
          const inserting = insert(current, at)
          if (at + chunk < rows) next = rowsAt(at + chunk)
          await inserting
        }
      })
      return rows / (wallMs / 1000)
    }
    const barePerSec = await backToBack(opts.rows, (rows) =>
      bare.client.insert({ table: bare.table('telemetry'), values: rows, format: 'JSONEachRow' }),
    )
    // The same inserts with what the writer must add for exactly-once (a de-duplication token,
    // de-duplication in the views too), on a fifth of the rows into a database of their own.
    const tokened = await openClickHouse(
      { ...common, clickhouseDatabase: 'tokened', clickhouseUrl: process.env.VIGIL_CLICKHOUSE_URL },
      log,
    )
    await migrate(tokened, MIGRATIONS, log)
    const insertTokened = clickhouseInsert(tokened)
    const sample = Math.max(chunk, Math.floor(opts.rows / 5 / chunk) * chunk)
    const tokenedPerSec = await backToBack(sample, (rows, at) =>
      insertTokened('telemetry', jsonEachRow(rows).text, rows.length, `bare-${at}`),
    )
    await tokened.close()

    // Each measure on a quiet ClickHouse: the bare inserts' background merges would otherwise
    // run during the writer's (one embedded ClickHouse holds both databases).
    const mergesMs = await timeIt(() => quiet(ch))
    say(`   (waited ${fmt(mergesMs)} ms for the bare inserts' merges to end)`)

    say('2/3 the writer, from a pre-filled TELEMETRY stream …')
    const js = jetstream(nc)
    const pending: Promise<unknown>[] = []
    for (let at = 0, b = 0; at < opts.rows; at += 500, b++) {
      const readings = []
      for (let i = at; i < Math.min(opts.rows, at + 500); i++) readings.push(reading(i, opts, start))
      pending.push(
        js.publish(rawSubject(b % 16), encodeReadingBatch(`sb-${b}`, readings, 'bench'), {
          msgID: `sb-${b}`,
        }),
      )
      if (pending.length >= 200) await Promise.all(pending.splice(0))
    }
    await Promise.all(pending)
    // Inferences for the anomaly list: every 20th reading, one in ten of them an ALERT.
    for (let at = 0, b = 0; at < opts.rows; at += 20 * 500, b++) {
      const inferences = []
      for (let i = at; i < Math.min(opts.rows, at + 20 * 500); i += 20) {
        const r = reading(i, opts, start)
        const alert = i % 200 === 0
        inferences.push(
          create(InferenceSchema, {
            eventId: r.eventId,
            deviceId: r.deviceId,
            ts: r.ts,
            score: alert ? 0.9 : 0.1,
            label: alert ? 'ALERT' : 'OK',
            anomalies: alert ? [{ name: 'temp', severity: 'high' }] : [],
            model: { name: 'fleet', version: 1 },
            inferredAt: r.receivedAt,
          }),
        )
      }
      await js.publish(
        `telemetry.inferred.${b % 16}`,
        toBinary(InferenceBatchSchema, create(InferenceBatchSchema, { batchId: `si-${b}`, inferences })),
        { msgID: `si-${b}` },
      )
    }
    const stop = new AbortController()
    const writerStart = process.hrtime.bigint()
    const registry = new Registry()
    // The store's compactor runs beside its writers, as in the service (every 60 s by default).
    const compacting = runCompactor({
      ch,
      intervalMs: 60_000,
      wrote: () => true,
      log,
      signal: stop.signal,
    })
    // The writers' connections as the service opens them (one per busy table).
    const writerConnections = await writerInserts(
      () =>
        openClickHouse(
          { ...common, clickhouseDatabase: 'vigil', clickhouseUrl: process.env.VIGIL_CLICKHOUSE_URL },
          log,
          { createDatabase: false },
        ),
      ch,
    )
    const writing = runWriters({
      js,
      jsm: await jetstreamManager(nc),
      insert: writerConnections.insert,
      log,
      registry,
      signal: stop.signal,
    })
    while ((await count(ch, 'telemetry')) < opts.rows) await new Promise((r) => setTimeout(r, 200))
    const writerSeconds = Number(process.hrtime.bigint() - writerStart) / 1e9
    const writerPerSec = opts.rows / writerSeconds
    while ((await count(ch, 'inferences')) < Math.ceil(opts.rows / 20))
      await new Promise((r) => setTimeout(r, 200))
    stop.abort()
    await writing
    await compacting
    await writerConnections.close()
    // Where the writer's time went: inside ClickHouse inserts, by table (its own histogram).
    const histogram = (await registry.getSingleMetric('vigil_store_insert_seconds')?.get())?.values ?? []
    const insideInserts = (table: string, what: string) =>
      histogram.find(
        (v) =>
          (v as { metricName?: string }).metricName === `vigil_store_insert_seconds_${what}` &&
          v.labels.table === table,
      )?.value ?? 0

    say('3/3 queries …')
    const limits = DEFAULT_READ_LIMITS
    const reads = { ch, settings: readSettings(limits, false), limits }
    const ctx: QueryContext = { config: { onlineWindowMs: 300_000 }, ch, reads, nc, log }
    const queries: [string, () => Promise<unknown>][] = [
      [
        'ListDevices (latest per device, first page)',
        () => listDevices(ctx, create(ListDevicesRequestSchema, { pageSize: 100 })),
      ],
      [
        'GetLatest (one device)',
        () => getLatest(ctx, create(GetLatestRequestSchema, { deviceId: 'bench-42' })),
      ],
      [
        'QueryRange (one device, one day, 15-minute buckets)',
        () =>
          queryRange(
            ctx,
            create(QueryRangeRequestSchema, {
              deviceId: 'bench-42',
              start: timestampFromMs(start),
              end: timestampFromMs(start + DAY),
              step: durationFromMs(15 * 60_000),
            }),
          ),
      ],
      [
        'GetFleetSummary (one day)',
        () => getFleetSummary(ctx, create(GetFleetSummaryRequestSchema, { window: durationFromMs(DAY) })),
      ],
      [
        'ListAnomalies (one day, first page)',
        () =>
          listAnomalies(
            ctx,
            create(ListAnomaliesRequestSchema, { start: timestampFromMs(start), pageSize: 100 }),
          ),
      ],
    ]
    const measure = async () => {
      const latencies: [string, number, number][] = []
      for (const [name, run] of queries) {
        await run() // warm
        const times: number[] = []
        for (let i = 0; i < 15; i++) times.push(await timeIt(run))
        times.sort((a, b) => a - b)
        latencies.push([name, times[Math.floor(times.length / 2)]!, times[times.length - 1]!])
      }
      return latencies
    }
    // As the store left them (its compactor passed at most a minute of inserts ago), then right
    // after one more pass.
    const asWritten = await measure()
    const compactMs = await compactLatestTables(ch)
    const compacted = await measure()

    say('')
    say('| measure | value |')
    say('|---|---|')
    say(`| bare insert (20,000-row inserts back to back, same schema) | ${fmt(barePerSec)} rows/s |`)
    say(`| writer from a pre-filled stream (ack after insert) | ${fmt(writerPerSec)} rows/s |`)
    say(`| writer / bare | ${(writerPerSec / barePerSec).toFixed(2)} |`)
    say(
      `| bare insert with the writer's exactly-once settings (token, de-duplication in views; ${fmt(sample)} rows) | ${fmt(tokenedPerSec)} rows/s (writer / this: ${(writerPerSec / tokenedPerSec).toFixed(2)}) |`,
    )
    say(
      `| writer's time inside inserts: telemetry / inferences (of ${writerSeconds.toFixed(1)} s) | ` +
        `${insideInserts('telemetry', 'sum').toFixed(1)} s in ${fmt(insideInserts('telemetry', 'count'))} inserts / ` +
        `${insideInserts('inferences', 'sum').toFixed(1)} s in ${fmt(insideInserts('inferences', 'count'))} inserts |`,
    )
    say(`| the compactor's pass over the latest-state tables | ${fmt(compactMs)} ms |`)
    say('')
    say(
      `| query, on ${fmt(opts.rows)} rows | p50 as the store left them (max) | p50 right after a compactor pass (max) |`,
    )
    say('|---|---|---|')
    asWritten.forEach(([name, p50, max], i) => {
      const [, p50c, maxc] = compacted[i] as [string, number, number]
      say(
        `| ${name} | ${p50.toFixed(1)} ms (${max.toFixed(1)}) | ${p50c.toFixed(1)} ms (${maxc.toFixed(1)}) |`,
      )
    })
  } finally {
    await bare.close()
    await ch.close()
    await nc.drain()
    await nats.stop()
    dir.remove()
  }
}
