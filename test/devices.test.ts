import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { jetstreamManager } from '@nats-io/jetstream'
import mqtt from 'mqtt'
import { DeviceService, DeviceStatus } from '../gen/vigil/device/v1/device_pb.js'
import { violationsOf } from '../services/common/errors.js'
import { createLogger } from '../services/common/log.js'
import { connectNats, type NatsConnection, provisionBus } from '../services/common/nats.js'
import { eventually, storedReadings } from './fixtures/bus.js'
import { type MosquittoFixture, startMosquitto } from './fixtures/mosquitto.js'
import { type NatsFixture, startNats } from './fixtures/nats.js'
import { startChild, tempDir } from './fixtures/process.js'
import { type ServiceProcess, startService } from './fixtures/services.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })
const BRIDGE = { username: 'vigil-bridge', password: 'bridge-secret-for-tests' }
const cli = fileURLToPath(new URL('../services/cli/main.ts', import.meta.url))

describe('devices: registry, per-device credentials and topic ACLs on mosquitto with dynamic security', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let broker: MosquittoFixture
  let query: ServiceProcess
  let bridge: ServiceProcess | undefined
  const dir = tempDir('devices')
  const client = () =>
    createClient(DeviceService, createConnectTransport({ baseUrl: query.url, httpVersion: '1.1' }))
  const connect = (username: string, password: string, protocolVersion: 4 | 5 = 5) =>
    mqtt.connectAsync(broker.url, {
      username,
      password,
      protocolVersion,
      clientId: `${username}-${Math.random().toString(36).slice(2, 8)}`,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
    })
  const reading = (seq: number) =>
    JSON.stringify({ ts: new Date().toISOString(), sensors: { temp: 20 + seq }, seq })

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    broker = await startMosquitto([], { dynsec: BRIDGE })
    query = await startService('query', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_DATA_DIR: dir.path,
      VIGIL_MQTT_DYNSEC: 'true',
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

  it('refuses a registration no bridge could complete, and keeps nothing of it', async () => {
    await assert.rejects(client().registerDevice({ deviceId: 'early-1' }), (err: ConnectError) => {
      assert.equal(err.code, Code.Unavailable)
      assert.match(err.rawMessage, /is a bridge running with VIGIL_MQTT_DYNSEC=true\? Nothing was registered/)
      return true
    })
    await assert.rejects(
      client().getDevice({ deviceId: 'early-1' }),
      (err: ConnectError) => err.code === Code.NotFound,
    )
    bridge = await startService('bridge', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_MQTT_URL: broker.url,
      VIGIL_MQTT_USERNAME: BRIDGE.username,
      VIGIL_MQTT_PASSWORD: BRIDGE.password,
      VIGIL_MQTT_DYNSEC: 'true',
      VIGIL_BATCH_LINGER_MS: '5',
    })
  })

  it('registers a device with credentials shown once; it connects and its readings reach the stream', async () => {
    const res = await client().registerDevice({ deviceId: 'pump-1', site: 'north', labels: { model: 'X2' } })
    assert.equal(res.device?.status, DeviceStatus.ACTIVE)
    assert.equal(res.credentials?.username, 'pump-1')
    assert.ok((res.credentials?.password.length ?? 0) >= 32)
    const got = await client().getDevice({ deviceId: 'pump-1' })
    assert.equal(got.device?.site, 'north')
    assert.deepEqual(got.device?.labels, { model: 'X2' })
    // The registry keeps only the salted hash.
    const raw = await (await import('../services/common/devices.js')).DeviceRegistry.open(nc)
    const record = await raw.record('pump-1')
    assert.equal(record?.passwordHash.length, 32)
    assert.ok(
      !Buffer.from(record?.passwordHash ?? [])
        .toString('latin1')
        .includes(res.credentials?.password ?? ''),
    )

    const device = await connect('pump-1', res.credentials?.password ?? '')
    await device.publishAsync('devices/pump-1/telemetry', reading(1), { qos: 1 })
    await eventually(
      async () => (await storedReadings(nc)).readings.some((r) => r.eventId === 'pump-1:seq:1'),
      10_000,
      'the reading on the bus',
    )
    await device.endAsync()
  })

  it('refuses an unknown device and a wrong password', async () => {
    await assert.rejects(connect('nobody', 'x'), /Not authorized/)
    await assert.rejects(connect('pump-1', 'wrong-password'), /Not authorized/)
  })

  it("keeps a device off another device's topics: publish refused (v5) or dropped (v3.1.1), subscribe refused", async () => {
    const a = await client().registerDevice({ deviceId: 'pump-2' })
    const b = await client().registerDevice({ deviceId: 'pump-3' })
    const v5 = await connect('pump-2', a.credentials?.password ?? '')
    await assert.rejects(
      v5.publishAsync('devices/pump-3/telemetry', reading(1), { qos: 1 }),
      /Not authorized/,
    )
    await assert.rejects(v5.subscribeAsync('devices/pump-3/cmd', { qos: 1 }), /Not authorized/)
    const own = await v5.subscribeAsync('devices/pump-2/cmd', { qos: 1 })
    assert.equal(own[0]?.qos, 1)
    const v3 = await connect('pump-3', b.credentials?.password ?? '', 4)
    await v3.publishAsync('devices/pump-2/telemetry', reading(2), { qos: 1 }) // acknowledged, dropped
    await v3.publishAsync('devices/pump-3/telemetry', reading(3), { qos: 1 })
    await eventually(
      async () => (await storedReadings(nc)).readings.some((r) => r.eventId === 'pump-3:seq:3'),
      10_000,
      "pump-3's own reading",
    )
    const { readings } = await storedReadings(nc)
    assert.ok(!readings.some((r) => r.deviceId === 'pump-2'), 'nothing in the name of pump-2')
    assert.ok(!readings.some((r) => r.deviceId === 'pump-3' && r.eventId !== 'pump-3:seq:3'))
    await Promise.all([v5.endAsync(), v3.endAsync()])
  })

  it('revoking a device disconnects it and refuses its next connection', async () => {
    const res = await client().registerDevice({ deviceId: 'pump-4' })
    const password = res.credentials?.password ?? ''
    const device = await connect('pump-4', password)
    const closed = new Promise<void>((resolve) => device.once('close', () => resolve()))
    const revoked = await client().revokeDevice({ deviceId: 'pump-4' })
    assert.equal(revoked.device?.status, DeviceStatus.REVOKED)
    await closed
    device.end(true)
    await eventually(
      async () =>
        connect('pump-4', password).then(
          async (c) => {
            await c.endAsync()
            return false
          },
          (err: Error) => /Not authorized/.test(err.message),
        ),
      10_000,
      'the revoked device refused',
    )
  })

  it('answers registry mistakes with the right codes', async () => {
    await assert.rejects(client().registerDevice({ deviceId: 'pump-1' }), (err: ConnectError) => {
      assert.equal(err.code, Code.AlreadyExists)
      return true
    })
    await assert.rejects(client().registerDevice({ deviceId: 'bad id/+' }), (err) => {
      assert.equal(ConnectError.from(err).code, Code.InvalidArgument)
      assert.equal(violationsOf(err)[0]?.field, 'device_id')
      return true
    })
    await assert.rejects(
      client().getDevice({ deviceId: 'ghost' }),
      (err: ConnectError) => err.code === Code.NotFound,
    )
    await assert.rejects(
      client().revokeDevice({ deviceId: 'ghost' }),
      (err: ConnectError) => err.code === Code.NotFound,
    )
    await assert.rejects(client().registerDevice({ deviceId: 'x', labels: { '': 'v' } }), (err) => {
      assert.equal(violationsOf(err)[0]?.field, 'labels[""]')
      return true
    })
  })

  it('vigil devices adds, lists, shows, updates and revokes', async () => {
    const vigil = async (args: string[]) => {
      const child = startChild(process.execPath, ['--import', 'tsx', cli, 'devices', ...args], {
        env: { ...process.env, VIGIL_QUERY_ADDR: query.url },
      })
      return { code: await child.exited, output: child.output() }
    }
    const add = await vigil(['add', 'fan-9', '--site', 'south', '--label', 'floor=2'])
    assert.equal(add.code, 0, add.output)
    assert.match(add.output, /MQTT password: [A-Za-z0-9_-]{32}/)
    assert.match(add.output, /shown this once/)
    const list = await vigil(['list', '--site', 'south'])
    assert.match(list.output, /fan-9\s+south\s+active\s+floor=2/)
    const update = await vigil(['update', 'fan-9', '--label', 'floor=3'])
    assert.match(update.output, /labels\s+floor=3/)
    const revoke = await vigil(['revoke', 'fan-9'])
    assert.match(revoke.output, /revoked fan-9/)
    const dup = await vigil(['add', 'fan-9'])
    assert.equal(dup.code, 1)
    assert.match(dup.output, /already registered/)
  })

  it('the bridge logs nothing it should not', async () => {
    const jsm = await jetstreamManager(nc)
    assert.ok((await jsm.streams.info('TELEMETRY')).state.messages > 0)
    assert.doesNotMatch(bridge?.output() ?? '', /"level":50/)
  })
})
