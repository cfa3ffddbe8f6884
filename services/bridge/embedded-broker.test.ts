import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import mqtt from 'mqtt'
import { eventually, storedReadings } from '../../test/fixtures/bus.js'
import { type NatsFixture, startNats } from '../../test/fixtures/nats.js'
import { type Child, startChild } from '../../test/fixtures/process.js'
import { type ServiceProcess, startService } from '../../test/fixtures/services.js'
import { createLogger } from '../common/log.js'
import { connectNats, type NatsConnection } from '../common/nats.js'
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
