import { type ClickHouse, type ReadLimits, readFailure } from '../common/clickhouse.js'
import type { Logger } from '../common/log.js'
import type { NatsConnection } from '../common/nats.js'
import type { QueryConfig } from './config.js'

/** What the query routes share; built once in main.ts, or by tests with their own parts. */
export interface QueryContext {
  config: Pick<QueryConfig, 'onlineWindowMs'>
  ch: ClickHouse
  /** Where users' reads run: read only and bounded (see `readSettings`). */
  reads: { ch: ClickHouse; settings: string; limits: ReadLimits }
  nc: NatsConnection
  log: Logger
}

/** Runs a parameterized query and returns its rows (user input only ever goes in `params`). */
export async function rows<T>(
  ctx: QueryContext,
  query: string,
  params: Record<string, unknown> = {},
): Promise<T[]> {
  try {
    const result = await ctx.reads.ch.client.query({
      query: query + ctx.reads.settings,
      query_params: params,
      format: 'JSONEachRow',
    })
    return await result.json<T>()
  } catch (err) {
    throw readFailure(err, ctx.reads.limits)
  }
}
