import type { ConnectRouter } from '@connectrpc/connect'
import { DeviceService } from '../../../gen/vigil/device/v1/device_pb.js'
import { QueryService } from '../../../gen/vigil/query/v1/query_pb.js'
import type { DeviceRegistry } from '../../common/devices.js'
import type { CommandService } from '../commands.js'
import type { QueryContext } from '../context.js'
import { deviceRegistryRoutes, type Provision } from './devices.js'
import { exportReadings } from './export-readings.js'
import { getFleetSummary } from './get-fleet-summary.js'
import { getLatest } from './get-latest.js'
import { listAnomalies } from './list-anomalies.js'
import { listDevices } from './list-devices.js'
import { queryRange } from './query-range.js'
import { watch } from './watch.js'

/** vigil.query.v1.QueryService and vigil.device.v1.DeviceService (its registry RPCs). */
export function queryRoutes(
  ctx: QueryContext,
  devices?: DeviceRegistry,
  provision?: Provision,
  commands?: CommandService,
) {
  return (router: ConnectRouter) => {
    if (devices) router.service(DeviceService, deviceRegistryRoutes(devices, provision, commands))
    router.service(QueryService, {
      listDevices: (req) => listDevices(ctx, req),
      getLatest: (req) => getLatest(ctx, req),
      queryRange: (req) => queryRange(ctx, req),
      listAnomalies: (req) => listAnomalies(ctx, req),
      getFleetSummary: (req) => getFleetSummary(ctx, req),
      watch: (req, hctx) => watch(ctx, req, hctx),
      exportReadings: (req) => exportReadings(ctx, req),
    })
  }
}
