// Keeps mosquitto's dynamic-security plugin in step with the device registry (VIGIL_MQTT_DYNSEC):
// every registered device has a role that may only publish its own telemetry and command acks and
// subscribe to its own commands; a revoked device is disabled (disconnected, then refused); a new
// device gets its broker account from the `device.provision` request the DeviceService sends at
// registration (the one moment its password exists in clear).
import { fromBinary, toBinary } from '@bufbuild/protobuf'
import {
  DeviceStatus,
  ProvisionDeviceRequestSchema,
  ProvisionDeviceResponseSchema,
} from '../../gen/vigil/device/v1/device_pb.js'
import type { DeviceRegistry } from '../common/devices.js'
import type { DynsecClient } from '../common/dynsec.js'
import type { Logger } from '../common/log.js'
import { type NatsConnection, PROVISION_SUBJECT } from '../common/nats.js'

export async function runDeviceSync(opts: {
  nc: NatsConnection
  registry: DeviceRegistry
  dynsec: DynsecClient
  log: Logger
  signal: AbortSignal
}): Promise<void> {
  const { nc, registry, dynsec, log, signal } = opts
  const sub = nc.subscribe(PROVISION_SUBJECT, { queue: 'bridge' })
  signal.addEventListener('abort', () => sub.unsubscribe(), { once: true })
  void (async () => {
    for await (const msg of sub) {
      let error = ''
      try {
        const req = fromBinary(ProvisionDeviceRequestSchema, msg.data)
        await dynsec.createDeviceClient(req.deviceId, req.password)
        log.info({ device: req.deviceId }, 'device given broker credentials')
      } catch (err) {
        error = (err as Error).message
        log.error({ err: error }, 'device provisioning failed')
      }
      msg.respond(
        toBinary(ProvisionDeviceResponseSchema, {
          $typeName: 'vigil.device.v1.ProvisionDeviceResponse',
          error,
        }),
      )
    }
  })()
  await registry.watch(async ({ deviceId, record }) => {
    try {
      const device = record?.device
      if (!device) {
        await dynsec.revokeDevice(deviceId)
        return
      }
      if (device.status === DeviceStatus.REVOKED) {
        await dynsec.revokeDevice(deviceId)
        log.info({ device: deviceId }, 'device revoked: disabled on the broker')
        return
      }
      await dynsec.ensureDeviceRole(deviceId)
      if (!(await dynsec.hasClient(deviceId)))
        log.warn(
          { device: deviceId },
          'device is registered but the broker has no account for it (its password is not kept): register it again',
        )
    } catch (err) {
      log.error(
        { device: deviceId, err: (err as Error).message },
        'could not bring the broker in step for a device',
      )
    }
  }, signal)
}
