// vigil-ingest: IngestService for devices and programs that speak gRPC, Connect or gRPC-Web.
import { hostname } from 'node:os'
import { ReadingBatcher } from '../common/batcher.js'
import { connectBus } from '../common/bus.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { runService } from '../common/service.js'
import { readIngestConfig } from './config.js'
import { createIngestContext } from './context.js'
import { ingestRoutes } from './routes/index.js'

await runService({
  name: 'ingest',
  defaultPort: DEFAULT_PORTS.ingest,
  readConfig: readIngestConfig,
  async start(kit) {
    const { config, log, metrics, lifecycle } = kit
    const { js } = await connectBus(kit)
    const batcher = new ReadingBatcher({
      js,
      log,
      registry: metrics.registry,
      partitions: config.partitions,
      source: `ingest/${hostname()}`,
      maxBatch: config.batchMax,
      lingerMs: config.batchLingerMs,
      giveUpAfterMs: config.storeTimeoutMs,
    })
    lifecycle.onStop('batcher', () => batcher.close())
    const ctx = createIngestContext({ config, log, js, batcher, registry: metrics.registry })
    return { routes: ingestRoutes(ctx) }
  },
})
