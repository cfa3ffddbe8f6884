// vigil-query: QueryService, DeviceService (and, with embedded ClickHouse, the store's writer) on port 8080.
import { connectBus } from '../common/bus.js'
import { openClickHouse, openClickHouseAs, readSettings } from '../common/clickhouse.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { DeviceRegistry } from '../common/devices.js'
import { runService } from '../common/service.js'
import { dashboardRoute } from '../dashboard/serve.js'
import { prepareSchema, writerOptions } from '../store/schema.js'
import { startStoreWriters } from '../store/start.js'
import { CommandService } from './commands.js'
import { readQueryConfig } from './config.js'
import { provisionThroughBridge } from './routes/devices.js'
import { queryRoutes } from './routes/index.js'

await runService({
  name: 'query',
  defaultPort: DEFAULT_PORTS.query,
  readConfig: readQueryConfig,
  async start(kit) {
    const { config, log, lifecycle } = kit
    const ch = await openClickHouse(config, log, writerOptions(config))
    lifecycle.onStop('clickhouse', () => ch.close())
    await prepareSchema(config, log, ch, {
      retentionDays: config.runWriter ? config.retentionDays : undefined,
    })
    const bus = await connectBus(kit)
    if (config.runWriter) {
      // Embedded ClickHouse: this process owns the data folder, so it also writes (see config.ts).
      await startStoreWriters(kit, ch, bus)
      log.info('running the store writer in this process (embedded ClickHouse)')
    }
    // Users' reads: a read-only user when one is configured, and read-only, bounded queries always.
    const readCh = config.clickhouseReadUser
      ? await openClickHouseAs(
          config,
          log,
          { name: config.clickhouseReadUser, password: config.clickhouseReadPassword },
          { createDatabase: false },
        )
      : ch
    if (readCh !== ch) lifecycle.onStop('clickhouse reads', () => readCh.close())
    const reads = {
      ch: readCh,
      settings: readSettings(config.readLimits, readCh !== ch),
      limits: config.readLimits,
    }
    const devices = await DeviceRegistry.open(bus.nc)
    // With mosquitto's dynamic security, a registration is complete once a bridge gave the device
    // its broker account.
    const provision = config.mqttDynsec ? provisionThroughBridge(bus.nc) : undefined
    const commands = await CommandService.open(bus.nc, devices, log)
    const dispatcher = commands.runDispatcher(lifecycle.signal)
    lifecycle.onStop('command dispatcher', () => dispatcher)
    return {
      routes: queryRoutes({ config, ch, reads, nc: bus.nc, log }, devices, provision, commands),
      httpRoutes: [
        dashboardRoute({
          dir: config.dashboardDir,
          inferenceUrl: config.inferencePublicUrl,
          auth: config.auth ? { signInUrl: config.signInUrl } : undefined,
        }),
      ],
    }
  },
})
