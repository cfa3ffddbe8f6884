// Devices that log in with a client certificate (mosquitto: require_certificate and
// use_identity_as_username, so the certificate's CN is the device id) instead of a password. The
// registry decides what such a device may do: a registered device publishes on its own topics only,
// an unknown certificate (signed by the same CA) and a revoked device may do nothing.
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import mqtt from 'mqtt'
import { DeviceService } from '../../gen/vigil/device/v1/device_pb.js'
import {
  type CertificatePair,
  createCertificateAuthority,
  issueCertificate,
} from '../../services/common/certs.js'
import { createLogger } from '../../services/common/log.js'
import { connectNats, type NatsConnection, provisionBus } from '../../services/common/nats.js'
import { eventually, storedReadings } from '../fixtures/bus.js'
import { type MosquittoFixture, startMosquitto } from '../fixtures/mosquitto.js'
import { type NatsFixture, startNats } from '../fixtures/nats.js'
import { freePort } from '../fixtures/ports.js'
import { tempDir } from '../fixtures/process.js'
import { type ServiceProcess, startService } from '../fixtures/services.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })
const BRIDGE = { username: 'vigil-bridge', password: 'bridge-secret-for-cert-tests' }

describe('devices with client certificates on mosquitto (CN = device id), held to the registry', () => {
  const dir = tempDir('device-certs')
  let nats: NatsFixture
  let nc: NatsConnection
  let broker: MosquittoFixture
  let query: ServiceProcess
  let bridge: ServiceProcess
  let ca: CertificatePair
  let certPort = 0
  const device = (id: string) =>
    issueCertificate(ca, { commonName: id, organizationalUnit: 'vigil-devices', usage: ['client'] })
  const connect = (cert: CertificatePair) =>
    mqtt.connectAsync(`mqtts://localhost:${certPort}`, {
      ca: ca.cert,
      cert: cert.cert,
      key: cert.key,
      protocolVersion: 5,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
      clientId: `c-${Math.random().toString(36).slice(2, 8)}`,
    })
  const reading = (seq: number) =>
    JSON.stringify({ ts: new Date().toISOString(), sensors: { temp: 20 + seq }, seq })
  const registry = () =>
    createClient(DeviceService, createConnectTransport({ baseUrl: query.url, httpVersion: '1.1' }))

  before(async () => {
    ca = createCertificateAuthority('Vigil device CA')
    const server = issueCertificate(ca, {
      commonName: 'mosquitto',
      dnsNames: ['localhost'],
      ips: ['127.0.0.1'],
      usage: ['server'],
    })
    const file = (name: string, text: string) => {
      writeFileSync(join(dir.path, name), text)
      return join(dir.path, name)
    }
    certPort = await freePort()
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    broker = await startMosquitto(
      [
        `listener ${certPort} 127.0.0.1`,
        `certfile ${file('server.pem', server.cert)}`,
        `keyfile ${file('server-key.pem', server.key)}`,
        `cafile ${file('ca.pem', ca.cert)}`,
        'require_certificate true',
        'use_identity_as_username true',
      ],
      { dynsec: BRIDGE },
    )
    query = await startService('query', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_DATA_DIR: dir.path,
      VIGIL_MQTT_DYNSEC: 'true',
    })
    bridge = await startService('bridge', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_MQTT_URL: broker.url,
      VIGIL_MQTT_USERNAME: BRIDGE.username,
      VIGIL_MQTT_PASSWORD: BRIDGE.password,
      VIGIL_MQTT_DYNSEC: 'true',
      VIGIL_BATCH_LINGER_MS: '5',
    })
  })
  after(async () => {
    await bridge?.stop()
    await query?.stop()
    await broker?.stop()
    await nc?.drain()
    await nats?.stop()
    dir.remove()
  })

  it('a registered device publishes with its certificate on its own topic only', async () => {
    await registry().registerDevice({ deviceId: 'cert-1', site: 'tls' })
    const c = await connect(device('cert-1'))
    try {
      await c.publishAsync('devices/cert-1/telemetry', reading(1), { qos: 1 })
      await assert.rejects(
        c.publishAsync('devices/cert-2/telemetry', reading(1), { qos: 1 }),
        /Not authorized/,
      )
    } finally {
      await c.endAsync()
    }
    await eventually(
      async () => (await storedReadings(nc)).readings.some((r) => r.eventId === 'cert-1:seq:1'),
      15_000,
      'the reading on the bus',
    )
  })

  it('a certificate for a device the registry does not know may do nothing', async () => {
    const c = await connect(device('ghost-1'))
    try {
      await assert.rejects(
        c.publishAsync('devices/ghost-1/telemetry', reading(1), { qos: 1 }),
        /Not authorized/,
      )
      await assert.rejects(c.subscribeAsync('devices/ghost-1/cmd', { qos: 1 }), /Not authorized/)
    } finally {
      await c.endAsync()
    }
  })

  it('a revoked device is disconnected and its certificate may do nothing after', async () => {
    await registry().registerDevice({ deviceId: 'cert-2', site: 'tls' })
    const cert = device('cert-2')
    const first = await connect(cert)
    await first.publishAsync('devices/cert-2/telemetry', reading(1), { qos: 1 })
    const closed = new Promise<void>((resolve) => first.once('close', () => resolve()))
    await registry().revokeDevice({ deviceId: 'cert-2' })
    await closed
    await eventually(
      async () => {
        const again = await connect(cert)
        try {
          await again.publishAsync('devices/cert-2/telemetry', reading(2), { qos: 1 })
          return false
        } catch (err) {
          return /Not authorized/.test((err as Error).message)
        } finally {
          await again.endAsync()
        }
      },
      15_000,
      'the revoked certificate refused',
    )
  })
})
