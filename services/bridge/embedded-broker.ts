// vigil-embedded-broker: an in-process MQTT 3.1.1 broker (aedes) that `vigil up` runs when no
// broker is configured and mosquitto is not installed. It keeps queued messages in memory only
// and has no MQTT v5 and no shared subscriptions: fine for a laptop, not for production, where
// mosquitto (deploy/mosquitto/) is the broker.
//
// With VIGIL_MQTT_AUTH=registry its hooks follow the device registry (the same rules mosquitto's
// dynamic security gets from the bridge): the bridge signs in with VIGIL_MQTT_USERNAME/PASSWORD and
// may do anything; a device signs in with its id and registered password and may only publish
// `devices/<id>/telemetry` and `devices/<id>/cmd/ack` and subscribe `devices/<id>/cmd`; a revoked
// device is disconnected and refused.

import { timingSafeEqual } from 'node:crypto'
import net from 'node:net'
import { Aedes, type Client } from 'aedes'
import { DeviceStatus } from '../../gen/vigil/device/v1/device_pb.js'
import { DEFAULT_PORTS, EnvReader } from '../common/config.js'
import { DeviceRegistry } from '../common/devices.js'
import { createLogger } from '../common/log.js'
import { connectNats } from '../common/nats.js'

const r = new EnvReader()
const port = r.int('VIGIL_MQTT_PORT', DEFAULT_PORTS.mqtt, 0, 65535)
const host = r.string('VIGIL_HOST', '127.0.0.1')
const auth = r.oneOf('VIGIL_MQTT_AUTH', ['none', 'registry'] as const, 'none')
const natsUrl = r.string('VIGIL_NATS_URL', `nats://127.0.0.1:${DEFAULT_PORTS.nats}`)
const bridgeUser = r.optionalString('VIGIL_MQTT_USERNAME')
const bridgePassword = r.optionalString('VIGIL_MQTT_PASSWORD')
if (auth === 'registry' && (!bridgeUser || !bridgePassword))
  r.problem(
    "VIGIL_MQTT_AUTH=registry needs VIGIL_MQTT_USERNAME and VIGIL_MQTT_PASSWORD (the bridge's account)",
  )
r.done()

const log = createLogger({ service: 'bridge', logLevel: 'info' }).child({ component: 'embedded-broker' })
const broker = await Aedes.createBroker({ concurrency: 1000, queueLimit: 1_000_000 })
const abort = new AbortController()
if (auth === 'registry') await followRegistry()

/** The hooks that check clients against the device registry, and the revocation watch. */
async function followRegistry(): Promise<void> {
  const nc = await connectNats({ service: 'bridge', natsUrl }, log)
  const registry = await DeviceRegistry.open(nc)
  const users = new WeakMap<Client, { deviceId?: string; bridge: boolean }>()
  const connected = new Set<Client>()
  broker.on('clientReady', (client) => connected.add(client))
  broker.on('clientDisconnect', (client) => connected.delete(client))
  const same = (a: string, b: string) =>
    a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b))
  broker.authenticate = (client, username, password, done) => {
    const user = username ?? ''
    const secret = password?.toString() ?? ''
    if (user === bridgeUser && same(secret, bridgePassword ?? '')) {
      users.set(client, { bridge: true })
      done(null, true)
      return
    }
    registry.verify(user, secret).then(
      (ok) => {
        if (ok) users.set(client, { deviceId: user, bridge: false })
        else log.info({ username: user.slice(0, 64) }, 'mqtt sign-in refused')
        done(null, ok)
      },
      (err: Error) => {
        log.error({ err: err.message }, 'registry unavailable: sign-in refused')
        done(null, false)
      },
    )
  }
  broker.authorizePublish = (client, packet, callback) => {
    const who = client ? users.get(client) : undefined
    if (!client || who?.bridge) return callback(null)
    const id = who?.deviceId
    if (id && (packet.topic === `devices/${id}/telemetry` || packet.topic === `devices/${id}/cmd/ack`))
      return callback(null)
    log.warn({ device: id, topic: packet.topic.slice(0, 200) }, "publish outside the device's topics refused")
    callback(new Error('not authorized'))
  }
  broker.authorizeSubscribe = (client, sub, callback) => {
    const who = users.get(client)
    if (who?.bridge || (who?.deviceId && sub.topic === `devices/${who.deviceId}/cmd`))
      return callback(null, sub)
    log.warn(
      { device: who?.deviceId, topic: sub.topic.slice(0, 200) },
      "subscription outside the device's topics refused",
    )
    callback(null, null)
  }
  void registry
    .watch(({ deviceId, record }) => {
      if (record?.device?.status === DeviceStatus.ACTIVE) return
      for (const client of connected) {
        if (users.get(client)?.deviceId !== deviceId) continue
        log.info({ device: deviceId }, 'device revoked: disconnected')
        client.close()
      }
    }, abort.signal)
    .catch((err: Error) => log.error({ err: err.message }, 'registry watch stopped'))
  log.info('clients are checked against the device registry')
}
const server = net.createServer(broker.handle)
server.listen(port, host, () =>
  log.info({ port, host }, 'embedded MQTT broker (aedes, MQTT 3.1.1) listening'),
)
broker.on('clientError', (client, err) =>
  log.warn({ client: client.id, err: err.message }, 'mqtt client error'),
)

const stop = () => {
  abort.abort()
  server.close()
  broker.close(() => log.info('embedded broker stopped'))
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
