import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import mqtt from 'mqtt'
import { eventually, storedReadings } from '../../test/fixtures/bus.js'
import { type NatsFixture, startNats } from '../../test/fixtures/nats.js'
import { type Child, startChild } from '../../test/fixtures/process.js'
import { type ServiceProcess, startService } from '../../test/fixtures/services.js'
import { DeviceRegistry } from '../common/devices.js'
import { createLogger } from '../common/log.js'
import { connectNats, type NatsConnection, provisionBus } from '../common/nats.js'
import { freePort, waitForPort } from '../common/net.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })
const entry = fileURLToPath(new URL('./embedded-broker.ts', import.meta.url))

describe('bridge on the embedded broker (aedes: MQTT 3.1.1, no shared subscriptions)', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let broker: Child
  let bridge: ServiceProcess
  let url: string

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    const port = await freePort()
    url = `mqtt://127.0.0.1:${port}`
    broker = startChild(process.execPath, ['--import', 'tsx', entry], {
      env: { ...process.env, VIGIL_MQTT_PORT: String(port) },
    })
    await waitForPort(port, { alive: broker.alive })
    bridge = await startService('bridge', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_MQTT_URL: url,
      VIGIL_DEVICE_RATE: '0',
    })
  })
  after(async () => {
    await bridge?.stop()
    await broker?.stop()
    await nc?.drain()
    await nats?.stop()
  })

  it('falls back to MQTT 3.1.1 with a plain subscription and stores every reading', async () => {
    const client = await mqtt.connectAsync(url, { protocolVersion: 4 })
    for (let seq = 1; seq <= 1_000; seq++) {
      const body = JSON.stringify({ ts: new Date().toISOString(), sensors: { temp: seq % 40 }, seq })
      await client.publishAsync(`devices/laptop-${seq % 10}/telemetry`, body, { qos: 1 })
    }
    await client.endAsync()
    await eventually(
      async () => (await storedReadings(nc)).readings.length >= 1_000,
      30_000,
      '1,000 readings',
    )
    const { readings } = await storedReadings(nc)
    assert.equal(new Set(readings.map((r) => r.eventId)).size, 1_000)
    assert.match(bridge.output(), /using MQTT 3\.1\.1 and a plain subscription/)
    assert.match(bridge.output(), /"protocolVersion":4,"shared":false,"msg":"mqtt subscribed"/)
  })
})

describe('embedded broker with VIGIL_MQTT_AUTH=registry: hooks read the device registry', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let broker: Child
  let url: string
  let registry: DeviceRegistry
  const BRIDGE = { username: 'vigil-bridge', password: 'embedded-bridge-secret' }
  const connect = (username: string, password: string) =>
    mqtt.connectAsync(url, {
      username,
      password,
      protocolVersion: 4,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
    })

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    registry = await DeviceRegistry.open(nc)
    const port = await freePort()
    url = `mqtt://127.0.0.1:${port}`
    broker = startChild(process.execPath, ['--import', 'tsx', entry], {
      env: {
        ...process.env,
        VIGIL_MQTT_PORT: String(port),
        VIGIL_MQTT_AUTH: 'registry',
        VIGIL_NATS_URL: nats.url,
        VIGIL_MQTT_USERNAME: BRIDGE.username,
        VIGIL_MQTT_PASSWORD: BRIDGE.password,
      },
    })
    await waitForPort(port, { alive: broker.alive })
  })
  after(async () => {
    await broker?.stop()
    await nc?.drain()
    await nats?.stop()
  })

  it('lets registered devices in on their own topics only, refuses strangers, and drops revoked devices', async () => {
    const { password } = await registry.register({ deviceId: 'lap-1', site: '', labels: {} })
    const other = await registry.register({ deviceId: 'lap-2', site: '', labels: {} })
    await assert.rejects(connect('lap-1', 'wrong'), /Not authorized|Bad username or password/)
    await assert.rejects(connect('stranger', 'x'), /Not authorized|Bad username or password/)

    const bridgeClient = await connect(BRIDGE.username, BRIDGE.password)
    const seen: string[] = []
    bridgeClient.on('message', (topic) => seen.push(topic))
    await bridgeClient.subscribeAsync('devices/+/telemetry', { qos: 1 })

    const device = await connect('lap-1', password)
    await device.publishAsync('devices/lap-1/telemetry', '{}', { qos: 1 })
    // SUBACK 0x80 for another device's commands.
    await assert.rejects(device.subscribeAsync('devices/lap-2/cmd', { qos: 1 }), /Subscribe error/)
    const own = await device.subscribeAsync('devices/lap-1/cmd', { qos: 1 })
    assert.equal(own[0]?.qos, 1)
    await eventually(async () => seen.includes('devices/lap-1/telemetry'), 5_000, 'own telemetry through')

    // Publishing in another device's name: refused, and the client is put out.
    const intruder = await connect('lap-2', other.password)
    const closed = new Promise<void>((resolve) => intruder.once('close', () => resolve()))
    intruder.publish('devices/lap-1/telemetry', '{}', { qos: 1 })
    await closed
    intruder.end(true)

    const gone = new Promise<void>((resolve) => device.once('close', () => resolve()))
    await registry.revoke('lap-1')
    await gone
    device.end(true)
    await assert.rejects(connect('lap-1', password), /Not authorized|Bad username or password/)
    await new Promise((r) => setTimeout(r, 200))
    assert.deepEqual(seen, ['devices/lap-1/telemetry'])
    await bridgeClient.endAsync()
  })
})
