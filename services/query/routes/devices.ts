import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { Code, ConnectError } from '@connectrpc/connect'
import {
  type GetDeviceRequest,
  type GetDeviceResponse,
  GetDeviceResponseSchema,
  type ListCommandsRequest,
  type ListCommandsResponse,
  ListCommandsResponseSchema,
  type ListDevicesRequest,
  type ListDevicesResponse,
  ListDevicesResponseSchema,
  ProvisionDeviceRequestSchema,
  ProvisionDeviceResponseSchema,
  type RegisterDeviceRequest,
  type RegisterDeviceResponse,
  RegisterDeviceResponseSchema,
  type RevokeDeviceRequest,
  type RevokeDeviceResponse,
  RevokeDeviceResponseSchema,
  type SendCommandRequest,
  type SendCommandResponse,
  SendCommandResponseSchema,
  type UpdateDeviceRequest,
  type UpdateDeviceResponse,
  UpdateDeviceResponseSchema,
} from '../../../gen/vigil/device/v1/device_pb.js'
import {
  DeviceExistsError,
  DeviceNotFoundError,
  type DeviceRegistry,
  validateDeviceFields,
} from '../../common/devices.js'
import { invalidArgument } from '../../common/errors.js'
import { type NatsConnection, PROVISION_SUBJECT } from '../../common/nats.js'
import type { CommandService } from '../commands.js'
import { page } from '../inputs.js'

/** Registry errors as the codes the contract promises. */
async function mapped<T>(work: () => Promise<T>): Promise<T> {
  try {
    return await work()
  } catch (err) {
    if (err instanceof DeviceExistsError) throw new ConnectError(err.message, Code.AlreadyExists)
    if (err instanceof DeviceNotFoundError) throw new ConnectError(err.message, Code.NotFound)
    throw err
  }
}

function checked(what: string, fields: Parameters<typeof validateDeviceFields>[0]): void {
  const violations = validateDeviceFields(fields)
  if (violations.length > 0) throw invalidArgument(what, violations)
}

/**
 * Gives a registered device its broker account (a bridge does it on mosquitto's dynamic security);
 * throws with the reason when that could not be done.
 */
export type Provision = (deviceId: string, password: string) => Promise<void>

/** A Provision that asks a bridge over NATS (`device.provision`). */
export function provisionThroughBridge(nc: NatsConnection, timeoutMs = 10_000): Provision {
  return async (deviceId, password) => {
    let reply: Uint8Array
    try {
      const msg = await nc.request(
        PROVISION_SUBJECT,
        toBinary(ProvisionDeviceRequestSchema, create(ProvisionDeviceRequestSchema, { deviceId, password })),
        { timeout: timeoutMs },
      )
      reply = msg.data
    } catch (err) {
      throw new ConnectError(
        `no bridge gave the device its broker account (${(err as Error).message}); ` +
          'is a bridge running with VIGIL_MQTT_DYNSEC=true? Nothing was registered: try again',
        Code.Unavailable,
      )
    }
    const { error } = fromBinary(ProvisionDeviceResponseSchema, reply)
    if (error) throw new ConnectError(`the broker refused the device's account: ${error}`, Code.Unavailable)
  }
}

/** vigil.device.v1.DeviceService's registry RPCs. */
export function deviceRegistryRoutes(
  registry: DeviceRegistry,
  provision?: Provision,
  commands?: CommandService,
) {
  return {
    async sendCommand(req: SendCommandRequest): Promise<SendCommandResponse> {
      if (!commands) throw new ConnectError('commands are not served here', Code.Unimplemented)
      return create(SendCommandResponseSchema, { command: await commands.send(req) })
    },
    async listCommands(req: ListCommandsRequest): Promise<ListCommandsResponse> {
      if (!commands) throw new ConnectError('commands are not served here', Code.Unimplemented)
      const { commands: list, next } = await commands.list(req.deviceId, req.pageSize, req.pageToken)
      return create(ListCommandsResponseSchema, { commands: list, nextPageToken: next })
    },
    async registerDevice(req: RegisterDeviceRequest): Promise<RegisterDeviceResponse> {
      checked('RegisterDeviceRequest', { deviceId: req.deviceId, site: req.site, labels: req.labels })
      const { device, password } = await mapped(() =>
        registry.register({ deviceId: req.deviceId, site: req.site, labels: req.labels }),
      )
      if (provision) {
        try {
          await provision(device.deviceId, password)
        } catch (err) {
          await registry.remove(device.deviceId)
          throw err
        }
      }
      return create(RegisterDeviceResponseSchema, {
        device,
        credentials: { username: device.username, password },
      })
    },
    async getDevice(req: GetDeviceRequest): Promise<GetDeviceResponse> {
      checked('GetDeviceRequest', { deviceId: req.deviceId })
      return create(GetDeviceResponseSchema, { device: await mapped(() => registry.get(req.deviceId)) })
    },
    async updateDevice(req: UpdateDeviceRequest): Promise<UpdateDeviceResponse> {
      checked('UpdateDeviceRequest', { deviceId: req.deviceId, site: req.site, labels: req.labels })
      const device = await mapped(() =>
        registry.update(req.deviceId, {
          site: req.site,
          labels: req.replaceLabels ? req.labels : undefined,
        }),
      )
      return create(UpdateDeviceResponseSchema, { device })
    },
    async revokeDevice(req: RevokeDeviceRequest): Promise<RevokeDeviceResponse> {
      checked('RevokeDeviceRequest', { deviceId: req.deviceId })
      return create(RevokeDeviceResponseSchema, { device: await mapped(() => registry.revoke(req.deviceId)) })
    },
    async listDevices(req: ListDevicesRequest): Promise<ListDevicesResponse> {
      if (req.site.length > 256)
        throw invalidArgument('ListDevicesRequest', [{ field: 'site', description: 'too long' }])
      const { limit, offset } = page(req.pageSize, req.pageToken)
      const all = (await registry.list()).filter(
        (d) => (!req.site || d.site === req.site) && (!req.status || d.status === req.status),
      )
      const devices = all.slice(offset, offset + limit)
      return create(ListDevicesResponseSchema, {
        devices,
        nextPageToken: offset + limit < all.length ? String(offset + limit) : '',
      })
    },
  }
}
