import { jetstreamManager } from '@nats-io/jetstream'
import { type ClickHouse, openClickHouse } from '../common/clickhouse.js'
import type { JetStreamClient, NatsConnection } from '../common/nats.js'
import type { ServiceKit } from '../common/service.js'
import { runCompactor } from './compaction.js'
import type { StoreConfig } from './config.js'
import { runWriters, writerInserts } from './consumers.js'

/**
 * Starts the store's writers in this process (the store service, or the query service with
 * embedded ClickHouse), once the schema is ready (prepareSchema); at stop they finish the inserts in
 * flight before NATS drains and ClickHouse closes.
 */
export async function startStoreWriters(
  kit: ServiceKit<StoreConfig>,
  ch: ClickHouse,
  bus: { nc: NatsConnection; js: JetStreamClient },
): Promise<void> {
  const { config, log, metrics, lifecycle } = kit
  const stop = new AbortController()
  const { insert, close } = await writerInserts(
    () => openClickHouse(config, log, { createDatabase: false }),
    ch,
  )
  let wrote = false
  const compacting = runCompactor({
    ch,
    intervalMs: config.compactIntervalMs,
    wrote: () => {
      const any = wrote
      wrote = false
      return any
    },
    log,
    signal: stop.signal,
  })
  const writing = runWriters({
    js: bus.js,
    jsm: await jetstreamManager(bus.nc),
    insert: async (table, text, rows, token) => {
      await insert(table, text, rows, token)
      wrote = true
    },
    log,
    registry: metrics.registry,
    signal: stop.signal,
    maxRows: config.insertMaxRows,
    lingerMs: config.insertLingerMs,
  })
  lifecycle.onStop('writers', async () => {
    stop.abort()
    await Promise.all([writing, compacting])
    await close()
  })
}
