// vigil-store: JetStream → ClickHouse writer (see services/store/README.md).
import { jetstreamManager } from '@nats-io/jetstream'
import { connectBus } from '../common/bus.js'
import { migrate, openClickHouse } from '../common/clickhouse.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { runService } from '../common/service.js'
import { readStoreConfig } from './config.js'
import { clickhouseInsert, runWriters } from './consumers.js'
import { MIGRATIONS } from './migrations.js'
import { applyRetention } from './retention.js'

await runService({
  name: 'store',
  defaultPort: DEFAULT_PORTS.store,
  readConfig: readStoreConfig,
  async start(kit) {
    const { config, log, metrics, lifecycle } = kit
    const ch = await openClickHouse(config, log)
    lifecycle.onStop('clickhouse', () => ch.close())
    await migrate(ch, MIGRATIONS, log)
    await applyRetention(ch, config.retentionDays)
    const { nc, js } = await connectBus(kit)
    const jsm = await jetstreamManager(nc)
    const stop = new AbortController()
    const writing = runWriters({
      js,
      jsm,
      insert: clickhouseInsert(ch),
      log,
      registry: metrics.registry,
      signal: stop.signal,
      maxRows: config.insertMaxRows,
      lingerMs: config.insertLingerMs,
    })
    // Stop consuming and finish the inserts in flight before NATS drains and ClickHouse closes.
    lifecycle.onStop('writers', async () => {
      stop.abort()
      await writing
    })
    return { routes: () => {} }
  },
})
