// vigil-store: JetStream → ClickHouse writer (see services/store/README.md).
import { connectBus } from '../common/bus.js'
import { openClickHouse } from '../common/clickhouse.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { runService } from '../common/service.js'
import { readStoreConfig } from './config.js'
import { prepareSchema, writerOptions } from './schema.js'
import { startStoreWriters } from './start.js'

await runService({
  name: 'store',
  defaultPort: DEFAULT_PORTS.store,
  readConfig: readStoreConfig,
  async start(kit) {
    // With a schema user the writer may only insert: the schema work runs as that user.
    const ch = await openClickHouse(kit.config, kit.log, writerOptions(kit.config))
    kit.lifecycle.onStop('clickhouse', () => ch.close())
    await prepareSchema(kit.config, kit.log, ch, { retentionDays: kit.config.retentionDays })
    await startStoreWriters(kit, ch, await connectBus(kit))
    return { routes: () => {} }
  },
})
