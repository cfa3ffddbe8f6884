import { Readable } from 'node:stream'
import { finished } from 'node:stream/promises'
import { fromBinary } from '@bufbuild/protobuf'
import type { Registry } from 'prom-client'
import { RejectedSchema } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import type { ClickHouse } from '../common/clickhouse.js'
import type { Logger } from '../common/log.js'
import {
  BUS,
  ensureConsumer,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  PoisonMessageError,
  registerConsumerLag,
  runConsumer,
} from '../common/nats.js'
import { contextFromHeaders } from '../common/tracing.js'
import { inferenceLines, telemetryLines } from './lines.js'
import { jsonEachRow, rejectedRow } from './rows.js'
import { type InsertRows, TableWriter } from './writer.js'

/**
 * Inserts through the ClickHouse client with a deduplication token (also for the rollup views).
 * The rows are already JSONEachRow text, sent as the body of `INSERT … FORMAT JSONEachRow` (the
 * client's `insert` would serialize row objects itself).
 */
export function clickhouseInsert(ch: ClickHouse): InsertRows {
  return async (table, text, _rows, token) => {
    const result = await ch.client.exec({
      query: `INSERT INTO ${ch.table(table)} FORMAT JSONEachRow`,
      values: Readable.from([Buffer.from(text)], { objectMode: false }),
      clickhouse_settings: {
        insert_deduplication_token: token,
        deduplicate_blocks_in_dependent_materialized_views: 1,
      },
    })
    result.stream.resume()
    await finished(result.stream)
  }
}

/** The tables that get a ClickHouse connection of their own (see `writerInserts`). */
export const BUSY_TABLES = ['telemetry', 'inferences']

/**
 * The writers' inserts, each busy table on a connection of its own, the rest on `shared`. One
 * connection runs one query at a time — with embedded ClickHouse (chdb) the telemetry and inference
 * inserts and every read of the process would queue behind each other on one core (measured: two
 * connections to the same data folder inserted the same rows 1.5 × as fast as one, on two cores),
 * and users' reads would wait behind inserts. chdb allows several connections to one data folder
 * in a process; against a server these are just more HTTP clients.
 */
export async function writerInserts(
  open: () => Promise<ClickHouse>,
  shared: ClickHouse,
): Promise<{ insert: InsertRows; close: () => Promise<void> }> {
  const own = new Map<string, ClickHouse>()
  try {
    for (const table of BUSY_TABLES) own.set(table, await open())
  } catch (err) {
    await Promise.all([...own.values()].map((c) => c.close()))
    throw err
  }
  const inserts = new Map([...own].map(([table, c]) => [table, clickhouseInsert(c)]))
  const fallback = clickhouseInsert(shared)
  return {
    insert: (table, text, rows, token) => (inserts.get(table) ?? fallback)(table, text, rows, token),
    close: async () => {
      await Promise.all([...own.values()].map((c) => c.close()))
    },
  }
}

export interface WriterOptions {
  js: JetStreamClient
  jsm: JetStreamManager
  insert: InsertRows
  log: Logger
  registry: Registry
  signal: AbortSignal
  maxRows?: number
  lingerMs?: number
  /** Messages each consumer holds while their rows wait for an insert (default 2048). */
  inFlight?: number
}

/**
 * The store's writers: durable consumers on TELEMETRY, INFERENCES and REJECTED whose messages are acked only
 * after the insert holding their rows succeeded. While ClickHouse fails, messages are nak'ed with
 * backoff and redelivered without limit (never dead-lettered for it); a message that does not
 * decode is poison: terminated and kept on `telemetry.rejected.poison`.
 */
export async function runWriters(opts: WriterOptions): Promise<void> {
  const inFlight = opts.inFlight ?? 2048
  const writers = [
    {
      stream: BUS.streams.telemetry,
      durable: 'store-telemetry',
      table: 'telemetry',
      deadLetterPoison: true,
      rows: (msg: JsMsg) => {
        const { batchId, rows, text } = decode(() => telemetryLines(msg.data), 'ReadingBatch')
        return { id: batchId || `seq-${msg.seq}`, rows, text }
      },
    },
    {
      // Dead letters are only counted and listed here; the REJECTED stream keeps their raw bytes.
      stream: BUS.streams.rejected,
      durable: 'store-rejected',
      table: 'rejected',
      deadLetterPoison: false,
      rows: (msg: JsMsg) => {
        const rejected = decode(() => fromBinary(RejectedSchema, msg.data), 'Rejected')
        return { id: `rejected-${msg.seq}`, ...jsonEachRow([rejectedRow(rejected, msg.seq)]) }
      },
    },
    {
      stream: BUS.streams.inferences,
      durable: 'store-inferences',
      table: 'inferences',
      deadLetterPoison: true,
      rows: (msg: JsMsg) => {
        const { batchId, rows, text } = decode(() => inferenceLines(msg.data), 'InferenceBatch')
        return { id: batchId || `seq-${msg.seq}`, rows, text }
      },
    },
  ]
  registerConsumerLag(
    opts.registry,
    opts.jsm,
    writers.map((w) => ({ stream: w.stream, durable: w.durable })),
  )
  await Promise.all(
    writers.map(async (w) => {
      // Unlimited deliveries: a ClickHouse outage must not turn good messages into dead letters.
      await ensureConsumer(opts.jsm, w.stream, w.durable, { maxDeliver: -1, maxAckPending: inFlight * 2 })
      const writer = new TableWriter({
        table: w.table,
        insert: opts.insert,
        log: opts.log,
        registry: opts.registry,
        maxRows: opts.maxRows,
        lingerMs: opts.lingerMs,
      })
      await runConsumer({
        js: opts.js,
        stream: w.stream,
        durable: w.durable,
        log: opts.log,
        signal: opts.signal,
        concurrency: inFlight,
        // Pulled in smaller requests than are held: one pull of 2,048 messages of up to ~75 KB is
        // more than nats-server's 64 MB per-client output buffer, and the server then drops them
        // as a slow consumer until their ack wait runs out (measured: 20 s stalls). Held messages
        // still reach `inFlight`, pull after pull.
        prefetch: Math.min(inFlight, 256),
        // And bounded by rows: large messages (500 readings each in the benchmark) would otherwise
        // be decoded a million rows ahead, the heap and GC growing and messages outliving their
        // ack wait (redelivered, inserted again) before an insert takes them.
        ready: () => writer.room(),
        maxDeliver: Number.POSITIVE_INFINITY,
        deadLetterPoison: w.deadLetterPoison ?? true,
        handle: async (msg) => {
          const { id, rows, text } = w.rows(msg)
          if (rows > 0) await writer.write(id, text, rows, contextFromHeaders(msg.headers))
        },
      })
      writer.flush()
    }),
  )
}

function decode<T>(fn: () => T, what: string): T {
  try {
    return fn()
  } catch (err) {
    throw new PoisonMessageError(`not a ${what}: ${(err as Error).message}`)
  }
}
