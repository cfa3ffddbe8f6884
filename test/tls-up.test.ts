// `vigil up --tls`: the whole stack with TLS on every listener — the services (h2 and HTTP/1.1 by
// ALPN, client certificates optional and verified), nats-server, mosquitto on MQTT over TLS — with
// certificates from the development CA in the data folder. A device registers, publishes over
// mqtts, and its reading comes back through the Query API over https; clear text is refused.
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { connect as connectNats } from '@nats-io/transport-node'
import mqtt from 'mqtt'
import { DeviceService } from '../gen/vigil/device/v1/device_pb.js'
import { InferenceService } from '../gen/vigil/inference/v1/inference_pb.js'
import { QueryService } from '../gen/vigil/query/v1/query_pb.js'
import { busUsersFile } from '../services/common/bus-users.js'
import { DEFAULT_PORTS } from '../services/common/config.js'
import { DevKey } from '../services/common/dev-issuer.js'
import { eventually } from './fixtures/bus.js'
import { type Child, tempDir } from './fixtures/process.js'
import { startVigil, startVigilUp } from './fixtures/services.js'

describe('vigil up --tls: TLS on every listener, certificates from the development CA', {
  timeout: 300_000,
}, () => {
  const dir = tempDir('tls-up')
  let up: Child
  let offset = 0
  let ca: string
  let admin: Record<string, string>
  const port = (c: keyof typeof DEFAULT_PORTS) => DEFAULT_PORTS[c] + offset
  const https = (c: keyof typeof DEFAULT_PORTS) => `https://127.0.0.1:${port(c)}`
  const certs = (name: string) => readFileSync(join(dir.path, 'certs', name), 'utf8')
  const transport = (c: keyof typeof DEFAULT_PORTS, client?: string) =>
    createConnectTransport({
      baseUrl: https(c),
      httpVersion: '2',
      nodeOptions: {
        ca,
        ...(client ? { cert: certs(`${client}.pem`), key: certs(`${client}-key.pem`) } : {}),
      },
    })

  before(async () => {
    ;({ up, offset } = await startVigilUp(['--tls', '--no-simulate'], { VIGIL_DATA_DIR: dir.path }))
    assert.doesNotMatch(up.output(), /not ready|not built/, up.output())
    ca = certs('ca.pem')
    const key = await DevKey.open(dir.path)
    admin = {
      authorization: `Bearer ${await key.mint({ subject: 'tls-test', roles: ['admin'], ttlSeconds: 600 })}`,
    }
  })
  after(async () => {
    await up?.stop()
    dir.remove()
  })

  it('says where everything runs, each address with TLS', () => {
    const out = up.output()
    for (const service of ['ingest', 'inference', 'query', 'bridge'])
      assert.match(
        out,
        new RegExp(`${service}\\s+https://127\\.0\\.0\\.1:${port(service as 'query')}\\s+ready`),
      )
    assert.match(out, new RegExp(`nats-server\\s+tls://127\\.0\\.0\\.1:${port('nats')}`))
    assert.match(out, new RegExp(`mqtt\\s+mqtts://localhost:${port('mqtts')}`))
    assert.match(out, new RegExp(`auth\\s+https://127\\.0\\.0\\.1:${port('issuer')}`))
    assert.match(out, /TLS is on everywhere/)
  })

  it('carries a device reading over mqtts, NATS with TLS and back over https', async () => {
    const registry = createClient(DeviceService, transport('query'))
    const res = await registry.registerDevice({ deviceId: 'tls-dev-1', site: 'tls' }, { headers: admin })
    const password = res.credentials?.password as string
    let device: mqtt.MqttClient | undefined
    await eventually(
      async () => {
        device = await mqtt
          .connectAsync(`mqtts://localhost:${port('mqtts')}`, {
            clientId: 'tls-dev-1',
            username: 'tls-dev-1',
            password,
            protocolVersion: 5,
            reconnectPeriod: 0,
            ca,
          })
          .catch(() => undefined)
        return device !== undefined
      },
      30_000,
      'the device connected over mqtts',
    )
    try {
      await device?.publishAsync(
        'devices/tls-dev-1/telemetry',
        JSON.stringify({ ts: new Date().toISOString(), sensors: { temp: 21.5 }, seq: 1 }),
        { qos: 1 },
      )
    } finally {
      await device?.endAsync()
    }
    const query = createClient(QueryService, transport('query'))
    await eventually(
      async () => {
        const latest = await query
          .getLatest({ deviceId: 'tls-dev-1' }, { headers: admin })
          .catch(() => undefined)
        return latest?.reading?.sensors.temp === 21.5
      },
      60_000,
      'the reading stored and read back over https',
    )
  })

  it('refuses clear text on every listener', async () => {
    for (const c of ['query', 'ingest', 'inference', 'issuer'] as const) {
      const res = await fetch(`http://127.0.0.1:${port(c)}/readyz`).catch((err: Error) => err)
      assert.ok(res instanceof Error, `${c} answered clear text`)
    }
    await assert.rejects(
      mqtt.connectAsync(`mqtt://127.0.0.1:${port('mqtts')}`, { reconnectPeriod: 0, connectTimeout: 3_000 }),
    )
    const passwords = JSON.parse(readFileSync(busUsersFile(dir.path), 'utf8')) as Record<string, string>
    // Without the CA the server's certificate is not trusted; nats-server takes no clear text.
    await assert.rejects(
      connectNats({
        servers: `127.0.0.1:${port('nats')}`,
        user: 'admin',
        pass: passwords.admin,
        reconnect: false,
      }),
    )
    const nc = await connectNats({
      servers: `tls://127.0.0.1:${port('nats')}`,
      user: 'admin',
      pass: passwords.admin,
      tls: { ca },
    })
    await nc.close()
  })

  it("takes a service's certificate as its credential on internal RPCs, a device's not", async () => {
    const viaIngestCert = createClient(InferenceService, transport('inference', 'ingest'))
    assert.deepEqual((await viaIngestCert.inferBatch({ requests: [] })).results, [])
    const anonymous = createClient(InferenceService, transport('inference'))
    await assert.rejects(anonymous.inferBatch({ requests: [] }), (err: unknown) => {
      assert.equal(ConnectError.from(err).code, Code.Unauthenticated)
      return true
    })
  })

  it('the CLI works with the settings vigil up printed', async () => {
    const cli = startVigil(['devices', 'list'], {
      VIGIL_DATA_DIR: dir.path,
      VIGIL_QUERY_ADDR: https('query'),
      VIGIL_TLS_CA: join(dir.path, 'certs', 'ca.pem'),
    })
    assert.equal(await cli.exited, 0, cli.output())
    assert.match(cli.output(), /tls-dev-1\s+tls\s+active/)
  })
})
