import type { ClickHouse } from '../common/clickhouse.js'
import type { Logger } from '../common/log.js'
import type { NatsConnection } from '../common/nats.js'
import type { QueryConfig } from './config.js'

/** What the query routes share; built once in main.ts, or by tests with their own parts. */
export interface QueryContext {
  config: Pick<QueryConfig, 'onlineWindowMs'>
  ch: ClickHouse
  nc: NatsConnection
  log: Logger
}

/** Runs a parameterized query and returns its rows (user input only ever goes in `params`). */
export async function rows<T>(
  ctx: QueryContext,
  query: string,
  params: Record<string, unknown> = {},
): Promise<T[]> {
  const result = await ctx.ch.client.query({ query, query_params: params, format: 'JSONEachRow' })
  return result.json<T>()
}
