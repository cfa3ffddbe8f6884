import { createHash } from 'node:crypto'
import { Counter, Histogram, type Registry } from 'prom-client'
import type { Logger } from '../common/log.js'
import { registeredOnce } from '../common/metrics.js'
import { type Context, SpanKind, spanContextOf, startSpan } from '../common/tracing.js'

/**
 * Inserts rows into a table, given as JSONEachRow text (`rows` lines); resolves once ClickHouse has
 * them. `token` makes a retry a no-op.
 */
export type InsertRows = (table: string, text: string, rows: number, token: string) => Promise<void>

export interface TableWriterOptions {
  table: string
  insert: InsertRows
  log: Logger
  registry: Registry
  /** Rows per insert at most (default 20,000). */
  maxRows?: number
  /** How long the first waiting rows may wait for more (default 1 s). */
  lingerMs?: number
  /**
   * Rows that may wait for the next inserts (default 3 × maxRows): `room()` holds the consumer
   * back beyond it. Enough to keep every insert full while one runs; more only grows the heap
   * and the time a message waits for its ack.
   */
  maxWaitingRows?: number
}

interface Waiting {
  /** The message's rows, JSONEachRow lines. */
  text: string
  rows: number
  ids: string[]
  resolve: () => void
  reject: (err: Error) => void
  /** The message's trace context (tracing on). */
  trace?: Context
}

/**
 * Gathers the rows of many bus messages into one large insert (ClickHouse wants thousands of rows
 * per insert, never one by one). `write()` resolves when the insert holding its rows succeeded, so
 * the consumer acknowledges a message only after its rows are stored; a failed insert rejects every
 * waiter and their messages are redelivered. The insert's deduplication token is derived from the
 * batch ids it holds, so the same group inserted again is dropped by ClickHouse.
 */
export class TableWriter {
  private waiting: Waiting[] = []
  private rowCount = 0
  private timer: NodeJS.Timeout | undefined
  /** One insert per table at a time: ClickHouse (embedded above all) serializes them anyway. */
  private inserting = false
  /** A flush was asked for while an insert ran; it happens when that insert ends. */
  private due = false
  private readonly maxRows: number
  private readonly lingerMs: number
  private readonly maxWaitingRows: number
  /** Consumers waiting for room (see `room()`). */
  private roomWaiters: (() => void)[] = []
  private readonly inserted: Counter
  private readonly failures: Counter
  private readonly seconds: Histogram

  constructor(private readonly opts: TableWriterOptions) {
    this.maxRows = opts.maxRows ?? 20_000
    this.lingerMs = opts.lingerMs ?? 1_000
    this.maxWaitingRows = Math.max(this.maxRows, opts.maxWaitingRows ?? 3 * this.maxRows)
    this.inserted = registeredOnce(
      opts.registry,
      'vigil_store_rows_inserted_total',
      () =>
        new Counter({
          name: 'vigil_store_rows_inserted_total',
          help: 'Rows inserted into ClickHouse, by table.',
          labelNames: ['table'],
          registers: [opts.registry],
        }),
    )
    this.failures = registeredOnce(
      opts.registry,
      'vigil_store_insert_failures_total',
      () =>
        new Counter({
          name: 'vigil_store_insert_failures_total',
          help: 'Inserts that failed (their messages are redelivered), by table.',
          labelNames: ['table'],
          registers: [opts.registry],
        }),
    )
    this.seconds = registeredOnce(
      opts.registry,
      'vigil_store_insert_seconds',
      () =>
        new Histogram({
          name: 'vigil_store_insert_seconds',
          help: 'Time of one ClickHouse insert, by table.',
          labelNames: ['table'],
          buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
          registers: [opts.registry],
        }),
    )
  }

  /**
   * Queues the rows of one bus message (`id` is its batch id; `text` its `rows` JSONEachRow lines);
   * resolves once they are inserted.
   */
  write(id: string, text: string, rows: number, trace?: Context): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ text, rows, ids: [id], resolve, reject, trace })
      this.rowCount += rows
      if (this.rowCount >= this.maxRows) this.flush()
      else this.timer ??= setTimeout(() => this.flush(), this.lingerMs)
    })
  }

  /**
   * Resolves when fewer than `maxWaitingRows` rows wait (undefined when there is room now), so a
   * consumer stops taking messages while enough rows wait for the next inserts. Rows only leave
   * by an insert, and one is running or due whenever `maxRows` wait, so the wait always ends.
   */
  room(): Promise<void> | undefined {
    if (this.rowCount < this.maxWaitingRows) return undefined
    return new Promise((resolve) => this.roomWaiters.push(resolve))
  }

  /**
   * Inserts what is waiting (up to `maxRows`, whole messages), or, while an insert runs, makes the
   * next insert start as soon as it ends: rows that arrive meanwhile join it, so a busy writer makes
   * fewer, bigger inserts instead of inserts that queue behind each other inside ClickHouse.
   */
  flush(): void {
    clearTimeout(this.timer)
    this.timer = undefined
    if (this.waiting.length === 0) return
    if (this.inserting) {
      this.due = true
      return
    }
    let take = 0
    let taken = 0
    while (
      take < this.waiting.length &&
      (take === 0 || taken + (this.waiting[take] as Waiting).rows <= this.maxRows)
    )
      taken += (this.waiting[take++] as Waiting).rows
    const group = this.waiting.splice(0, take)
    this.rowCount -= taken
    if (this.rowCount < this.maxWaitingRows) for (const go of this.roomWaiters.splice(0)) go()
    this.inserting = true
    const rows = taken
    const text = group.map((w) => w.text).join('')
    const token = createHash('sha256')
      .update(
        group
          .flatMap((w) => w.ids)
          .sort()
          .join('\n'),
      )
      .digest('hex')
      .slice(0, 32)
    const started = process.hrtime.bigint()
    const table = this.opts.table
    // Tracing (when on): the insert continues the first message's trace and links to the others.
    const traces = group.flatMap((w) => (w.trace ? [w.trace] : []))
    const span = startSpan(`clickhouse.insert ${table}`, {
      kind: SpanKind.CLIENT,
      parent: traces[0],
      links: traces.slice(1, 128).flatMap((c) => {
        const sc = spanContextOf(c)
        return sc ? [{ context: sc }] : []
      }),
      attributes: { 'db.system': 'clickhouse', 'db.collection.name': table, 'vigil.rows': rows },
    })
    this.opts
      .insert(table, text, rows, token)
      .then(
        () => {
          span?.end()
          this.seconds.observe({ table }, Number(process.hrtime.bigint() - started) / 1e9)
          this.inserted.inc({ table }, rows)
          for (const w of group) w.resolve()
        },
        (err: Error) => {
          span?.recordException(err)
          span?.end()
          this.failures.inc({ table })
          this.opts.log.warn({ table, rows, err: err.message }, 'insert failed; messages will be redelivered')
          for (const w of group) w.reject(err)
        },
      )
      .finally(() => {
        this.inserting = false
        const due = this.due
        this.due = false
        if (due || this.rowCount >= this.maxRows) this.flush()
        else if (this.waiting.length > 0) this.timer ??= setTimeout(() => this.flush(), this.lingerMs)
      })
  }
}
