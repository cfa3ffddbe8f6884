// vigil-ingest: IngestService for devices and programs that speak gRPC, Connect or gRPC-Web.
import { hostname } from 'node:os'
import { jetstream } from '@nats-io/jetstream'
import { ReadingBatcher } from '../common/batcher.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { connectNats, provisionBus } from '../common/nats.js'
import { runService } from '../common/service.js'
import { readIngestConfig } from './config.js'
import { createIngestContext } from './context.js'
import { ingestRoutes } from './routes/index.js'

await runService({
  name: 'ingest',
  defaultPort: DEFAULT_PORTS.ingest,
  readConfig: readIngestConfig,
  async start({ config, log, metrics, health, lifecycle }) {
    const nc = await connectNats(config, log, { signal: lifecycle.signal })
    lifecycle.onStop('nats', () => nc.drain())
    health.addCheck({ name: 'nats', ok: () => !nc.isClosed() })
    await provisionBus(nc, log)
    const js = jetstream(nc)
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
