// vigil-store: JetStream → ClickHouse writer (see services/store/README.md).
import { connectBus } from '../common/bus.js'
import { migrate, openClickHouse } from '../common/clickhouse.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { runService } from '../common/service.js'
import { readStoreConfig } from './config.js'
import { MIGRATIONS } from './migrations.js'
import { startStoreWriters } from './start.js'

await runService({
  name: 'store',
  defaultPort: DEFAULT_PORTS.store,
  readConfig: readStoreConfig,
  async start(kit) {
    const ch = await openClickHouse(kit.config, kit.log)
    kit.lifecycle.onStop('clickhouse', () => ch.close())
    await migrate(ch, MIGRATIONS, kit.log)
    await startStoreWriters(kit, ch, await connectBus(kit))
    return { routes: () => {} }
  },
})
