// Users and roles against the real query and inference services (their production entry points,
// a real nats-server, embedded ClickHouse), with an issuer whose JWKS is served over HTTP. Each
// row: a call, the token it carries, and the answer it must get.
import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Code, type ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { DeviceService } from '../../gen/vigil/device/v1/device_pb.js'
import { InferenceService } from '../../gen/vigil/inference/v1/inference_pb.js'
import { QueryService } from '../../gen/vigil/query/v1/query_pb.js'
import { type NatsFixture, startNats } from '../fixtures/nats.js'
import { tempDir } from '../fixtures/process.js'
import { type ServiceProcess, startService } from '../fixtures/services.js'

const ISSUER = 'https://login.example.test'

describe('security: user tokens and roles on the query and inference services', () => {
  let nats: NatsFixture
  let jwks: Server
  let query: ServiceProcess
  let inference: ServiceProcess
  let keys: CryptoKeyPair
  const data = tempDir('security')
  const issued: string[] = []

  const token = async (roles: string[], expiresAt: number | string = '10m') => {
    const jwt = await new SignJWT({ roles })
      .setProtectedHeader({ alg: 'ES256', kid: 'main' })
      .setSubject(`user-${roles.join('-') || 'none'}`)
      .setIssuer(ISSUER)
      .setAudience('vigil')
      .setExpirationTime(expiresAt)
      .sign(keys.privateKey)
    issued.push(jwt)
    return jwt
  }
  const headers = async (roles: string[] | undefined) =>
    roles ? { authorization: `Bearer ${await token(roles)}` } : undefined
  const transport = (s: ServiceProcess) => createConnectTransport({ baseUrl: s.url, httpVersion: '1.1' })

  before(async () => {
    keys = await generateKeyPair('ES256')
    const jwk = { ...(await exportJWK(keys.publicKey)), kid: 'main', alg: 'ES256' }
    jwks = createServer((_req, res) => res.end(JSON.stringify({ keys: [jwk] })))
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve))
    const auth = {
      VIGIL_AUTH_JWKS_URL: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/.well-known/jwks.json`,
      VIGIL_AUTH_ISSUER: ISSUER,
      // Expiry is checked to the second here (the default tolerates 30 s of clock skew).
      VIGIL_AUTH_CLOCK_SKEW_SECONDS: '0',
    }
    nats = await startNats()
    const env = { VIGIL_NATS_URL: nats.url, VIGIL_DATA_DIR: data.path, ...auth }
    ;[query, inference] = await Promise.all([
      startService('query', env, { timeoutMs: 60_000 }),
      startService('inference', { ...env, VIGIL_BOOTSTRAP_ROWS: '0' }),
    ])
  })
  after(async () => {
    await Promise.all([query?.stop(), inference?.stop()])
    await nats?.stop()
    jwks?.close()
    data.remove()
  })

  // [what is tried, roles of the token (undefined: none), the call, the expected code]
  const rows: [
    string,
    string[] | undefined,
    (h?: Record<string, string>) => Promise<unknown>,
    Code | 'ok',
  ][] = [
    [
      'read the fleet without a token',
      undefined,
      (h) => createClient(QueryService, transport(query)).getFleetSummary({}, { headers: h }),
      Code.Unauthenticated,
    ],
    [
      'read the fleet as a viewer',
      ['viewer'],
      (h) => createClient(QueryService, transport(query)).getFleetSummary({}, { headers: h }),
      'ok',
    ],
    [
      'register a device as a viewer',
      ['viewer'],
      (h) =>
        createClient(DeviceService, transport(query)).registerDevice({ deviceId: 'sec-1' }, { headers: h }),
      Code.PermissionDenied,
    ],
    [
      'register a device as an operator',
      ['operator'],
      (h) =>
        createClient(DeviceService, transport(query)).registerDevice({ deviceId: 'sec-1' }, { headers: h }),
      'ok',
    ],
    [
      'revoke a device as an operator',
      ['operator'],
      (h) =>
        createClient(DeviceService, transport(query)).revokeDevice({ deviceId: 'sec-1' }, { headers: h }),
      Code.PermissionDenied,
    ],
    [
      'revoke a device as an admin',
      ['admin'],
      (h) =>
        createClient(DeviceService, transport(query)).revokeDevice({ deviceId: 'sec-1' }, { headers: h }),
      'ok',
    ],
    [
      'send a command as a viewer',
      ['viewer'],
      (h) =>
        createClient(DeviceService, transport(query)).sendCommand(
          { deviceId: 'sec-1', name: 'reboot' },
          { headers: h },
        ),
      Code.PermissionDenied,
    ],
    [
      'list models without a token',
      undefined,
      (h) => createClient(InferenceService, transport(inference)).listModels({}, { headers: h }),
      Code.Unauthenticated,
    ],
    [
      'list models as a viewer',
      ['viewer'],
      (h) => createClient(InferenceService, transport(inference)).listModels({}, { headers: h }),
      'ok',
    ],
    [
      'promote a model as an operator',
      ['operator'],
      (h) =>
        createClient(InferenceService, transport(inference)).promoteModel(
          { name: 'fleet', version: 1, alias: 'production' },
          { headers: h },
        ),
      Code.PermissionDenied,
    ],
    [
      'score readings (InferBatch, internal) without a token',
      undefined,
      (h) =>
        createClient(InferenceService, transport(inference)).inferBatch({ requests: [] }, { headers: h }),
      Code.Unauthenticated,
    ],
    [
      'score readings (InferBatch, internal) with an admin user token',
      ['admin'],
      (h) =>
        createClient(InferenceService, transport(inference)).inferBatch({ requests: [] }, { headers: h }),
      Code.PermissionDenied,
    ],
    [
      'score readings (InferBatch, internal) with a service token',
      ['service'],
      (h) =>
        createClient(InferenceService, transport(inference)).inferBatch({ requests: [] }, { headers: h }),
      'ok',
    ],
    [
      'list devices with a service token (services are not users)',
      ['service'],
      (h) => createClient(DeviceService, transport(query)).listDevices({}, { headers: h }),
      Code.PermissionDenied,
    ],
    [
      'read with SQL-ish device ids as a viewer (answered, not run)',
      ['viewer'],
      (h) =>
        createClient(QueryService, transport(query)).getLatest({ deviceId: "x' OR 1=1 --" }, { headers: h }),
      Code.InvalidArgument,
    ],
  ]

  for (const [what, roles, call, expected] of rows) {
    it(`${expected === 'ok' ? 'allows' : 'refuses'}: ${what}`, async () => {
      const h = await headers(roles)
      if (expected === 'ok') {
        await call(h)
        return
      }
      await assert.rejects(call(h), (err: ConnectError) => {
        assert.equal(err.code, expected, `${what}: ${err.message}`)
        return true
      })
    })
  }

  it('keeps health, readiness and metrics open for probes and scrapers', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics'])
      assert.equal((await fetch(`${query.url}${path}`)).status, 200, path)
  })

  it('ends a Watch stream when its token expires', async () => {
    const short = await token(['viewer'], Math.floor(Date.now() / 1000) + 2)
    const started = Date.now()
    await assert.rejects(
      (async () => {
        for await (const _ of createClient(QueryService, transport(query)).watch(
          { readings: true },
          { headers: { authorization: `Bearer ${short}` } },
        ));
      })(),
      (err: ConnectError) => {
        assert.equal(err.code, Code.Unauthenticated)
        assert.match(err.rawMessage, /token expired/)
        return true
      },
    )
    // Heartbeats every 5 s carry the check: the stream ends within one of them after expiry.
    assert.ok(Date.now() - started < 12_000)
  })

  it('never writes a token into the logs', (t) => {
    const logs = query.output() + inference.output()
    for (const jwt of issued)
      assert.ok(!logs.includes(jwt.split('.')[2] as string), 'a token signature is in a log')
    t.diagnostic(`${rows.length + 3} checks, ${issued.length} tokens issued`)
  })
})
