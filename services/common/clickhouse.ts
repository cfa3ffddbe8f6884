import { createHash } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { type ClickHouseClient, createClient } from '@clickhouse/client'
import { Code, ConnectError } from '@connectrpc/connect'
import type { CommonConfig } from './config.js'
import type { Logger } from './log.js'

export type { ClickHouseClient }

type ChdbAsClientConnection = NonNullable<NonNullable<Parameters<typeof createClient>[0]>['connection']>

/** A ClickHouse client plus the database its tables live in. */
export interface ClickHouse {
  client: ClickHouseClient
  database: string
  /** `embedded` (chdb in the data dir, this process only) or `server` (HTTP to VIGIL_CLICKHOUSE_URL). */
  mode: 'embedded' | 'server'
  /** A table's fully qualified, quoted name. Queries always qualify names: chdb has no per-client database. */
  table(name: string): string
  close(): Promise<void>
}

/**
 * One factory for both modes: HTTP to a ClickHouse server when VIGIL_CLICKHOUSE_URL is set, else
 * embedded ClickHouse (chdb) in `<dataDir>/clickhouse`. chdb binds one data folder per process and
 * locks it, so in embedded mode only one process may open the store.
 */
export async function openClickHouse(
  config: Pick<
    CommonConfig,
    'clickhouseUrl' | 'clickhouseUser' | 'clickhousePassword' | 'clickhouseDatabase' | 'dataDir'
  > &
    Partial<Pick<CommonConfig, 'clickhouseCa'>>,
  log: Logger,
  /** `createDatabase: false` for users that may not create it (the reader, an insert-only writer). */
  opts: { createDatabase?: boolean } = {},
): Promise<ClickHouse> {
  const database = config.clickhouseDatabase
  let client: ClickHouseClient
  let mode: ClickHouse['mode']
  if (config.clickhouseUrl) {
    mode = 'server'
    client = createClient({
      url: config.clickhouseUrl,
      username: config.clickhouseUser,
      password: config.clickhousePassword,
      request_timeout: 60_000,
      ...(config.clickhouseCa ? { tls: { ca_cert: config.clickhouseCa } } : {}),
      clickhouse_settings: { date_time_input_format: 'best_effort' },
    })
  } else {
    mode = 'embedded'
    const path = join(config.dataDir, 'clickhouse')
    mkdirSync(path, { recursive: true })
    // Imported lazily so server deployments need not ship the native library.
    const { createChdbConnection } = await import('chdb/connection')
    // chdb types the connection against its own copy of @clickhouse/client-common; same shape.
    const connection = createChdbConnection({ path }) as unknown as ChdbAsClientConnection
    client = createClient({ connection })
  }
  const ping = await client.ping()
  if (!ping.success) {
    await client.close()
    const where = config.clickhouseUrl ?? 'embedded chdb'
    throw new Error(`cannot reach ClickHouse at ${where}: ${(ping as { error?: Error }).error?.message}`)
  }
  // A read-only user cannot create anything; the writer's connection made the database.
  if (opts.createDatabase !== false)
    await client.command({ query: `CREATE DATABASE IF NOT EXISTS ${quoteIdent(database)}` })
  log.info(
    {
      mode,
      database,
      user: config.clickhouseUrl ? config.clickhouseUser : undefined,
      url: config.clickhouseUrl ?? join(config.dataDir, 'clickhouse'),
    },
    'clickhouse ready',
  )
  return {
    client,
    database,
    mode,
    table: (name) => `${quoteIdent(database)}.${quoteIdent(name)}`,
    close: () => client.close(),
  }
}

/** The same ClickHouse as `config`, connected as another user (the reader, the schema user). */
export function openClickHouseAs(
  config: Parameters<typeof openClickHouse>[0],
  log: Logger,
  user: { name: string; password: string },
  opts: { createDatabase?: boolean } = {},
): Promise<ClickHouse> {
  return openClickHouse(
    { ...config, clickhouseUser: user.name, clickhousePassword: user.password },
    log,
    opts,
  )
}

/** Quotes a ClickHouse identifier. */
export function quoteIdent(name: string): string {
  return `\`${name.replace(/\\/g, '\\\\').replace(/`/g, '\\`')}\``
}

/** One schema change. `statements` use `{db}` for the database; each must be idempotent (IF NOT EXISTS). */
export interface Migration {
  version: number
  name: string
  statements: string[]
}

/**
 * Applies migrations in version order, recording each in `schema_migrations`. Applied migrations are
 * skipped; one whose statements changed since it was applied is an error (write a new migration
 * instead). Two processes starting at once both run idempotent statements and record the same rows,
 * which the ReplacingMergeTree folds into one.
 */
export async function migrate(ch: ClickHouse, migrations: Migration[], log: Logger): Promise<number[]> {
  const versions = migrations.map((m) => m.version)
  if (new Set(versions).size !== versions.length) throw new Error('migrations: duplicate version numbers')
  const ledger = ch.table('schema_migrations')
  await ch.client.command({
    query: `CREATE TABLE IF NOT EXISTS ${ledger} (
      version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')
    ) ENGINE = ReplacingMergeTree(applied_at) ORDER BY version`,
  })
  const rows = await (
    await ch.client.query({ query: `SELECT version, checksum FROM ${ledger} FINAL`, format: 'JSONEachRow' })
  ).json<{ version: number; checksum: string }>()
  const applied = new Map(rows.map((r) => [Number(r.version), r.checksum]))
  const done: number[] = []
  for (const m of [...migrations].sort((a, b) => a.version - b.version)) {
    const statements = m.statements.map((s) => s.replaceAll('{db}', quoteIdent(ch.database)))
    const checksum = createHash('sha256').update(statements.join('\n;\n')).digest('hex').slice(0, 16)
    const previous = applied.get(m.version)
    if (previous !== undefined) {
      if (previous !== checksum) {
        throw new Error(
          `migration ${m.version} (${m.name}) changed after it was applied; add a new migration instead`,
        )
      }
      continue
    }
    for (const query of statements) await ch.client.command({ query })
    await ch.client.insert({
      table: ledger,
      values: [{ version: m.version, name: m.name, checksum, applied_at: toDateTime64(new Date()) }],
      format: 'JSONEachRow',
    })
    log.info({ version: m.version, name: m.name }, 'migration applied')
    done.push(m.version)
  }
  return done
}

/** A Date as ClickHouse reads DateTime64(3, 'UTC') text: `2025-08-26 12:34:56.789`. */
export function toDateTime64(date: Date | number): string {
  return new Date(date).toISOString().replace('T', ' ').replace('Z', '')
}

/** What one query run for a user's request may cost (VIGIL_QUERY_MAX_*). */
export interface ReadLimits {
  maxExecutionSeconds: number
  maxResultRows: number
}

/** The query service's defaults: above the largest legitimate answer (an export of 1,000,000 readings). */
export const DEFAULT_READ_LIMITS: ReadLimits = { maxExecutionSeconds: 30, maxResultRows: 2_000_000 }

/**
 * The SETTINGS clause every query run for a user's request ends with, enforced by ClickHouse
 * itself: read only (no INSERT, ALTER, DROP — whatever the SQL), bounded time and result. A clause
 * in the query, not client settings: embedded chdb turns client settings into session-wide SETs,
 * which would leave the writer sharing the session read-only. With a dedicated read-only user
 * (`dedicatedUser`, VIGIL_CLICKHOUSE_READ_USER) its profile pins `readonly`, which may then not be
 * set again.
 */
export function readSettings(limits: ReadLimits, dedicatedUser: boolean): string {
  const settings = [
    ...(dedicatedUser ? [] : ['readonly = 2']),
    `max_execution_time = ${Math.trunc(limits.maxExecutionSeconds)}`,
    `max_result_rows = ${Math.trunc(limits.maxResultRows)}`,
    "result_overflow_mode = 'throw'",
  ]
  return ` SETTINGS ${settings.join(', ')}`
}

/** A read that ClickHouse stopped at a limit, as the RPC error the caller can act on; else the error. */
export function readFailure(err: unknown, limits: ReadLimits): unknown {
  const code = Number((err as { code?: string | number }).code)
  if (code === 159)
    return new ConnectError(
      `the query ran longer than ${limits.maxExecutionSeconds} s: narrow the time range or the devices`,
      Code.DeadlineExceeded,
    )
  if (code === 396)
    return new ConnectError(
      `the answer would exceed ${limits.maxResultRows} rows: narrow the time range, or page`,
      Code.ResourceExhausted,
    )
  return err
}
