// NATS users per service: the services do their work under their own users (a reading goes in
// through ingest, is scored by inference, stored and read back by query), and a service that
// publishes outside its subjects is refused by nats-server itself.
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { create } from '@bufbuild/protobuf'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import { createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { IngestService } from '../../gen/vigil/ingest/v1/ingest_pb.js'
import { QueryService } from '../../gen/vigil/query/v1/query_pb.js'
import { ReadingSchema } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import {
  BUS_USERS,
  type BusUser,
  deployNatsConfig,
  passwordVariable,
} from '../../services/common/bus-users.js'
import { createLogger } from '../../services/common/log.js'
import { provisionBus } from '../../services/common/nats.js'
import { normalReading, Rng, syntheticFleet } from '../../services/inference/model/synthetic.js'
import { eventually } from '../fixtures/bus.js'
import { type NatsFixture, startNats } from '../fixtures/nats.js'
import { freePort, waitForPort } from '../fixtures/ports.js'
import { startChild, tempDir } from '../fixtures/process.js'
import { type ServiceProcess, startService } from '../fixtures/services.js'

describe('security: NATS users per service with subject permissions', () => {
  const passwords = Object.fromEntries(BUS_USERS.map((u) => [u, randomBytes(12).toString('hex')])) as Record<
    BusUser,
    string
  >
  const data = tempDir('bus-users')
  let nats: NatsFixture
  const services: ServiceProcess[] = []
  const as = (user: BusUser) => ({ VIGIL_NATS_USER: user, VIGIL_NATS_PASSWORD: passwords[user] })

  before(async () => {
    nats = await startNats({ passwords })
    const common = { VIGIL_NATS_URL: nats.url, VIGIL_DATA_DIR: data.path }
    // The admin provisions the bus, as `vigil up` does; each service then runs as itself.
    const admin = await connect({ servers: nats.url, user: 'admin', pass: passwords.admin })
    await provisionBus(admin, createLogger({ service: 'cli', logLevel: 'silent' }))
    await admin.drain()
    services.push(
      ...(await Promise.all([
        startService('inference', { ...common, ...as('inference'), VIGIL_BOOTSTRAP_ROWS: '40' }),
        startService('query', { ...common, ...as('query') }, { timeoutMs: 60_000 }),
        startService('ingest', { ...common, ...as('ingest') }),
      ])),
    )
  })
  after(async () => {
    await Promise.all(services.map((s) => s.stop()))
    await nats?.stop()
    data.remove()
  })

  it('lets each service do its work under its own user: ingest → inference → store → query', async () => {
    const [inference, query, ingest] = services as [ServiceProcess, ServiceProcess, ServiceProcess]
    const device = syntheticFleet(1, 3)[0] as ReturnType<typeof syntheticFleet>[number]
    const rng = new Rng(5)
    const readings = Array.from({ length: 60 }, (_, i) =>
      create(ReadingSchema, {
        deviceId: device.id,
        ts: timestampFromDate(new Date(Date.now() - (60 - i) * 1000)),
        sensors: normalReading(device, rng),
        seq: BigInt(i + 1),
      }),
    )
    const transport = (s: ServiceProcess) => createConnectTransport({ baseUrl: s.url, httpVersion: '1.1' })
    const res = await createClient(IngestService, transport(ingest)).publishBatch({ readings })
    assert.equal(res.accepted, 60)
    await eventually(
      async () => {
        const latest = await createClient(QueryService, transport(query)).getLatest({ deviceId: device.id })
        return latest.inference !== undefined
      },
      60_000,
      'the latest reading with its inference, read through the query service',
    )
    assert.ok(inference.output().includes('bootstrap model trained and promoted to production'))
    for (const s of services)
      assert.doesNotMatch(s.output(), /Permissions Violation/i, s.output().slice(-2000))
  })

  // [user, subject it must not publish to]
  const forbidden: [BusUser, string][] = [
    ['bridge', 'telemetry.inferred.0'],
    ['bridge', '$KV.model-aliases.fleet.production'],
    ['ingest', 'device.cmd.dev-1'],
    ['ingest', '$KV.devices.dev-1'],
    ['inference', 'telemetry.raw.0'],
    ['inference', '$KV.devices.dev-1'],
    ['store', 'telemetry.raw.0'],
    ['store', '$O.models.C.x'],
    ['query', 'telemetry.raw.0'],
    ['query', 'telemetry.inferred.0'],
  ]
  for (const [user, subject] of forbidden) {
    it(`refuses ${user} publishing to ${subject}`, async () => {
      const nc = await connect({ servers: nats.url, user, pass: passwords[user] })
      const refused = (async () => {
        for await (const s of nc.status())
          if (s.type === 'error' && /permissions violation for publish/i.test(String(s.error)))
            return String(s.error)
        return ''
      })()
      nc.publish(subject, new Uint8Array([1]))
      const message = await Promise.race([
        refused,
        new Promise<string>((r) => setTimeout(() => r(''), 5_000)),
      ])
      await nc.close()
      assert.match(message, new RegExp(subject.replace(/[.$]/g, '\\$&')))
    })
  }

  it('ships deploy/nats/nats.conf as generated, and nats-server takes its users with passwords from the environment', async () => {
    const shipped = readFileSync('deploy/nats/nats.conf', 'utf8')
    assert.equal(
      shipped,
      deployNatsConfig(),
      'deploy/nats/nats.conf is stale: regenerate it from deployNatsConfig()',
    )
    const dir = tempDir('deploy-nats')
    const conf = join(dir.path, 'nats.conf')
    // The container's /data is the only thing a test here cannot use.
    writeFileSync(conf, shipped.replace('store_dir: "/data"', `store_dir: ${JSON.stringify(dir.path)}`))
    const port = await freePort()
    let monitor = await freePort()
    while (monitor === port) monitor = await freePort()
    // nats-server reads each variable as a config value: a password must start with a letter (one
    // starting with a digit is taken for a number and the server refuses to start).
    const deployPassword = (u: BusUser) => `pw${passwords[u]}`
    const env = Object.fromEntries(BUS_USERS.map((u) => [passwordVariable(u), deployPassword(u)]))
    const server = startChild(
      'nats-server',
      ['-c', conf, '-a', '127.0.0.1', '-p', String(port), '-m', String(monitor)],
      {
        env: { ...process.env, ...env },
      },
    )
    try {
      await waitForPort(port, { alive: server.alive }).catch((err: Error) => {
        throw new Error(`${err.message}:\n${server.output()}`)
      })
      const url = `nats://127.0.0.1:${port}`
      const bridge = await connect({ servers: url, user: 'bridge', pass: deployPassword('bridge') })
      await bridge.flush()
      await bridge.close()
      await assert.rejects(
        connect({ servers: url, user: 'bridge', pass: deployPassword('query'), reconnect: false }),
      )
    } finally {
      await server.stop()
      dir.remove()
    }
  })

  it('refuses a wrong password and an unknown user', async () => {
    await assert.rejects(connect({ servers: nats.url, user: 'query', pass: 'guess', reconnect: false }))
    await assert.rejects(connect({ servers: nats.url, user: 'mallory', pass: 'x', reconnect: false }))
    const jsm = await jetstreamManager(
      await connect({ servers: nats.url, user: 'admin', pass: passwords.admin }),
    )
    assert.ok((await jsm.streams.info('TELEMETRY')).state.messages > 0)
  })
})
