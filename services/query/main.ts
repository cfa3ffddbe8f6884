// vigil-query: QueryService (and, with embedded ClickHouse, the store's writer) on port 8080.
import { jetstreamManager } from '@nats-io/jetstream'
import { connectBus } from '../common/bus.js'
import { migrate, openClickHouse } from '../common/clickhouse.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { runService } from '../common/service.js'
import { clickhouseInsert, runWriters } from '../store/consumers.js'
import { MIGRATIONS } from '../store/migrations.js'
import { applyRetention } from '../store/retention.js'
import { readQueryConfig } from './config.js'
import { queryRoutes } from './routes/index.js'

await runService({
  name: 'query',
  defaultPort: DEFAULT_PORTS.query,
  readConfig: readQueryConfig,
  async start(kit) {
    const { config, log, metrics, lifecycle } = kit
    const ch = await openClickHouse(config, log)
    lifecycle.onStop('clickhouse', () => ch.close())
    await migrate(ch, MIGRATIONS, log)
    const { nc, js } = await connectBus(kit)
    if (config.runWriter) {
      // Embedded ClickHouse: this process owns the data folder, so it also writes (see config.ts).
      await applyRetention(ch, config.retentionDays)
      const stop = new AbortController()
      const writing = runWriters({
        js,
        jsm: await jetstreamManager(nc),
        insert: clickhouseInsert(ch),
        log,
        registry: metrics.registry,
        signal: stop.signal,
        maxRows: config.insertMaxRows,
        lingerMs: config.insertLingerMs,
      })
      lifecycle.onStop('writers', async () => {
        stop.abort()
        await writing
      })
      log.info('running the store writer in this process (embedded ClickHouse)')
    }
    return { routes: queryRoutes({ config, ch, nc, log }) }
  },
})
