import type { ClickHouse } from '../common/clickhouse.js'
import { RETENTION } from './migrations.js'

/** Sets each table's TTL from VIGIL_RETENTION_DAYS; run at every start, so a change applies. */
export async function applyRetention(ch: ClickHouse, days: number): Promise<void> {
  for (const { table, column } of RETENTION) {
    await ch.client.command({
      query: `ALTER TABLE ${ch.table(table)} MODIFY TTL toDateTime(${column}) + INTERVAL ${Math.floor(days)} DAY`,
    })
  }
}
