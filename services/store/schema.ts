import { type ClickHouse, migrate, openClickHouseAs } from '../common/clickhouse.js'
import type { CommonConfig } from '../common/config.js'
import type { Logger } from '../common/log.js'
import { MIGRATIONS } from './migrations.js'
import { applyRetention } from './retention.js'

/**
 * Brings the schema up to date: migrations, then (for a process that writes) the retention TTLs.
 * With VIGIL_CLICKHOUSE_SCHEMA_USER this DDL runs on a short-lived connection as that user, so the
 * writer's own user (VIGIL_CLICKHOUSE_USER) needs INSERT only; otherwise it runs on `ch`.
 */
export async function prepareSchema(
  config: CommonConfig,
  log: Logger,
  ch: ClickHouse,
  opts: { retentionDays?: number },
): Promise<void> {
  const schema = config.clickhouseSchemaUser
    ? await openClickHouseAs(config, log, {
        name: config.clickhouseSchemaUser,
        password: config.clickhouseSchemaPassword,
      })
    : ch
  try {
    await migrate(schema, MIGRATIONS, log)
    if (opts.retentionDays !== undefined) await applyRetention(schema, opts.retentionDays)
  } finally {
    if (schema !== ch) await schema.close()
  }
}

/** The writer's connection: it creates the database itself unless a schema user does that. */
export function writerOptions(config: CommonConfig): { createDatabase: boolean } {
  return { createDatabase: !config.clickhouseSchemaUser }
}
