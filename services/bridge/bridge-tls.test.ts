import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import mqtt from 'mqtt'
import { RejectReason } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { eventually, storedReadings, storedRejections } from '../../test/fixtures/bus.js'
import { type MosquittoFixture, startMosquitto } from '../../test/fixtures/mosquitto.js'
import { type NatsFixture, startNats } from '../../test/fixtures/nats.js'
import { tempDir } from '../../test/fixtures/process.js'
import { type ServiceProcess, startService } from '../../test/fixtures/services.js'
import { createCertificateAuthority, issueCertificate } from '../common/certs.js'
import { createLogger } from '../common/log.js'
import { connectNats, type NatsConnection } from '../common/nats.js'
import { freePort } from '../common/net.js'
import { RateLimiter } from '../common/rate-limit.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })

describe('bridge over MQTT with mutual TLS, and its per-device rate limit', () => {
  const dir = tempDir('bridge-tls')
  let nats: NatsFixture
  let broker: MosquittoFixture
  let nc: NatsConnection
  let bridge: ServiceProcess
  let tlsPort: number

  before(async () => {
    const ca = createCertificateAuthority('Vigil test CA')
    const server = issueCertificate(ca, {
      commonName: 'localhost',
      dnsNames: ['localhost'],
      usage: ['server'],
    })
    const client = issueCertificate(ca, { commonName: 'vigil-bridge', usage: ['client'] })
    const file = (name: string, text: string) => {
      writeFileSync(join(dir.path, name), text)
      return join(dir.path, name)
    }
    const paths = {
      ca: file('ca.pem', ca.cert),
      cert: file('server.pem', server.cert),
      key: file('server-key.pem', server.key),
      clientCert: file('client.pem', client.cert),
      clientKey: file('client-key.pem', client.key),
    }
    tlsPort = await freePort()
    nats = await startNats()
    broker = await startMosquitto([
      `listener ${tlsPort} 127.0.0.1`,
      `certfile ${paths.cert}`,
      `keyfile ${paths.key}`,
      `cafile ${paths.ca}`,
      'require_certificate true',
    ])
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    bridge = await startService('bridge', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_MQTT_URL: `mqtts://localhost:${tlsPort}`,
      VIGIL_MQTT_CA: paths.ca,
      VIGIL_MQTT_CERT: paths.clientCert,
      VIGIL_MQTT_KEY: paths.clientKey,
      VIGIL_DEVICE_RATE: '5',
      VIGIL_DEVICE_BURST: '5',
    })
  })
  after(async () => {
    await bridge?.stop()
    await nc?.drain()
    await Promise.all([nats?.stop(), broker?.stop()])
    dir.remove()
  })

  it('subscribes over TLS with a client certificate and stores what devices send', async () => {
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5 })
    const body = JSON.stringify({ ts: new Date().toISOString(), sensors: { t: 1 }, seq: 1 })
    await client.publishAsync('devices/tls-1/telemetry', body, { qos: 1 })
    await client.endAsync()
    await eventually(
      async () => (await storedReadings(nc)).readings.some((r) => r.eventId === 'tls-1:seq:1'),
      15_000,
      'the reading',
    )
    assert.match(
      bridge.output(),
      /"url":"mqtts:\/\/localhost:\d+","protocolVersion":5,"shared":true,"msg":"mqtt subscribed"/,
    )
  })

  it('keeps a noisy device to its rate and dead-letters the excess, without slowing the others', async () => {
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5 })
    const body = (seq: number) => JSON.stringify({ ts: new Date().toISOString(), sensors: { t: seq }, seq })
    for (let seq = 1; seq <= 40; seq++)
      await client.publishAsync('devices/noisy/telemetry', body(seq), { qos: 1 })
    for (let seq = 1; seq <= 3; seq++)
      await client.publishAsync('devices/calm/telemetry', body(seq), { qos: 1 })
    await client.endAsync()
    await eventually(
      async () => (await storedReadings(nc)).readings.filter((r) => r.deviceId === 'calm').length === 3,
      15_000,
      'the calm device',
    )
    const limited = (await storedRejections(nc)).filter((r) => r.reason === RejectReason.RATE_LIMITED)
    const stored = (await storedReadings(nc)).readings.filter((r) => r.deviceId === 'noisy').length
    assert.ok(limited.length >= 20, `${limited.length} rate-limited`)
    assert.equal(stored + limited.length, 40, 'every reading of the noisy device is stored or kept')
    assert.equal(limited[0]?.deviceId, 'noisy')
    assert.equal(limited[0]?.subject, 'telemetry.rejected.rate_limited')
  })
})

describe('RateLimiter', () => {
  it('allows the burst, then the rate, per key', () => {
    const limiter = new RateLimiter(10, 3)
    const t0 = 1_000_000
    assert.deepEqual(
      [1, 2, 3, 4].map(() => limiter.take('a', t0)),
      [true, true, true, false],
    )
    assert.equal(limiter.take('b', t0), true, 'another key has its own bucket')
    assert.equal(limiter.take('a', t0 + 100), true, '100 ms at 10/s refills one token')
    assert.equal(limiter.take('a', t0 + 100), false)
    assert.equal(new RateLimiter(0, 1).take('x'), true, 'rate 0 means unlimited')
  })
})
