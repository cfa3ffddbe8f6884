// vigil-ingest: IngestService for devices and programs that speak gRPC, Connect or gRPC-Web.
import { producerBatcher } from '../common/batcher.js'
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
    const batcher = producerBatcher(kit, js, { giveUpAfterMs: config.storeTimeoutMs })
    lifecycle.onStop('batcher', () => batcher.close())
    const ctx = createIngestContext({ config, log, js, batcher, registry: metrics.registry })
    return { routes: ingestRoutes(ctx) }
  },
})
