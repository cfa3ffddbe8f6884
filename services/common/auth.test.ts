import assert from 'node:assert/strict'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { Code, type ConnectError } from '@connectrpc/connect'
import { createRemoteJWKSet, exportJWK, generateKeyPair, type JWK, SignJWT, UnsecuredJWT } from 'jose'
import { echoBehindAuth } from '../../test/fixtures/auth.js'
import type { AuthConfig, RolePolicy } from './auth.js'

const ISSUER = 'https://issuer.test'
const POLICY: RolePolicy = {
  'vigil.kit.v1.EchoService': { default: 'viewer', methods: { Echo: 'operator' } },
}

describe('auth: bearer tokens verified against the issuer JWKS, roles per RPC', () => {
  let jwksServer: Server
  const published: JWK[] = []
  let key1: CryptoKeyPair
  let key2: CryptoKeyPair
  let stranger: CryptoKeyPair
  let config: AuthConfig

  const token = (
    claims: Record<string, unknown>,
    opts: { key?: CryptoKeyPair; kid?: string; exp?: string | number; aud?: string; iss?: string } = {},
  ) =>
    new SignJWT({ roles: ['viewer'], ...claims })
      .setProtectedHeader({ alg: 'ES256', kid: opts.kid ?? 'k1' })
      .setSubject('ada@example.com')
      .setIssuer(opts.iss ?? ISSUER)
      .setAudience(opts.aud ?? 'vigil')
      .setIssuedAt()
      .setExpirationTime(opts.exp ?? '5m')
      .sign((opts.key ?? key1).privateKey)

  const client = () => {
    const keys = createRemoteJWKSet(new URL(config.jwksUrl), { cooldownDuration: 0 })
    return echoBehindAuth(config, POLICY, { keys })
  }
  const echo = (authorization?: string) =>
    client().echo({ message: 'hi' }, authorization ? { headers: { authorization } } : {})

  before(async () => {
    key1 = await generateKeyPair('ES256')
    key2 = await generateKeyPair('ES256')
    stranger = await generateKeyPair('ES256')
    published.push({ ...(await exportJWK(key1.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' })
    jwksServer = createServer((_req, res) => {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ keys: published }))
    })
    await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve))
    const { port } = jwksServer.address() as AddressInfo
    config = {
      jwksUrl: `http://127.0.0.1:${port}/jwks.json`,
      issuer: ISSUER,
      audience: 'vigil',
      rolesClaim: 'roles',
      clockSkewSeconds: 0,
      userRatePerSec: 1000,
      userBurst: 1000,
      userStreams: 10,
    }
  })
  after(() => jwksServer?.close())

  // Each row: an attack or a mistake, and the refusal it must get.
  const refusals: [string, () => Promise<string | undefined>, Code, RegExp][] = [
    ['no token', async () => undefined, Code.Unauthenticated, /missing credentials/],
    ['another scheme (Basic)', async () => 'Basic YWRhOnB3', Code.Unauthenticated, /missing credentials/],
    ['not a JWT', async () => 'Bearer not.a.jwt', Code.Unauthenticated, /invalid token/],
    [
      'expired',
      async () => `Bearer ${await token({ roles: ['admin'] }, { exp: Math.floor(Date.now() / 1000) - 60 })}`,
      Code.Unauthenticated,
      /expired/,
    ],
    [
      'wrong audience',
      async () => `Bearer ${await token({ roles: ['admin'] }, { aud: 'someone-else' })}`,
      Code.Unauthenticated,
      /claim "aud"/,
    ],
    [
      'wrong issuer',
      async () => `Bearer ${await token({ roles: ['admin'] }, { iss: 'https://evil.test' })}`,
      Code.Unauthenticated,
      /claim "iss"/,
    ],
    [
      'unsigned (alg: none)',
      async () =>
        `Bearer ${new UnsecuredJWT({ roles: ['admin'] }).setSubject('x').setIssuer(ISSUER).setAudience('vigil').setExpirationTime('5m').encode()}`,
      Code.Unauthenticated,
      /invalid token/,
    ],
    [
      'forged: another key under a published key id',
      async () => `Bearer ${await token({ roles: ['admin'] }, { key: stranger })}`,
      Code.Unauthenticated,
      /signature does not verify/,
    ],
    [
      'signed with a key the issuer does not publish',
      async () => `Bearer ${await token({ roles: ['admin'] }, { key: stranger, kid: 'k9' })}`,
      Code.Unauthenticated,
      /does not publish/,
    ],
    [
      'shared-secret algorithm (HS256)',
      async () =>
        `Bearer ${await new SignJWT({ roles: ['admin'] })
          .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
          .setSubject('x')
          .setIssuer(ISSUER)
          .setAudience('vigil')
          .setExpirationTime('5m')
          .sign(new TextEncoder().encode('a-shared-secret-of-32-bytes-long!'))}`,
      Code.Unauthenticated,
      /invalid token/,
    ],
    [
      'role escalation: a viewer calls an operator RPC',
      async () => `Bearer ${await token({ roles: ['viewer'] })}`,
      Code.PermissionDenied,
      /needs the role operator/,
    ],
    [
      'a role the claim does not hold (roles in another claim)',
      async () => `Bearer ${await token({ roles: undefined, groups: ['admin'] })}`,
      Code.PermissionDenied,
      /has none/,
    ],
  ]

  for (const [name, authorization, code, message] of refusals) {
    it(`refuses: ${name}`, async () => {
      await assert.rejects(echo(await authorization()), (err: ConnectError) => {
        assert.equal(err.code, code, err.message)
        assert.match(err.rawMessage, message)
        return true
      })
    })
  }

  it('accepts the roles that suffice (operator and admin for an operator RPC; viewer for a viewer RPC)', async (t) => {
    for (const role of ['operator', 'admin']) {
      const res = await echo(`Bearer ${await token({ roles: [role] })}`)
      assert.equal(res.message, 'hi')
    }
    // Roles as a space-separated string, as some issuers send them.
    assert.equal((await echo(`Bearer ${await token({ roles: 'operator extra' })}`)).message, 'hi')
    const streamed = []
    for await (const m of client().echoStream(
      { message: 'x', count: 2 },
      { headers: { authorization: `Bearer ${await token({ roles: ['viewer'] })}` } },
    ))
      streamed.push(m)
    assert.equal(streamed.length, 2)
    t.diagnostic(`${refusals.length} refusals checked`)
  })

  it('follows key rotation: a token signed with a key published later is accepted', async () => {
    published.push({ ...(await exportJWK(key2.publicKey)), kid: 'k2', alg: 'ES256', use: 'sig' })
    const res = await echo(`Bearer ${await token({ roles: ['operator'] }, { key: key2, kid: 'k2' })}`)
    assert.equal(res.message, 'hi')
  })

  it('ends a server stream when the token it was opened with expires', async () => {
    const short = await token({ roles: ['viewer'] }, { exp: Math.floor(Date.now() / 1000) + 2 })
    const got: number[] = []
    await assert.rejects(
      (async () => {
        for await (const m of client().echoStream(
          { message: 'tick', count: 100, intervalMs: 100 },
          { headers: { authorization: `Bearer ${short}` } },
        ))
          got.push(m.index)
      })(),
      (err: ConnectError) => {
        assert.equal(err.code, Code.Unauthenticated)
        assert.match(err.rawMessage, /token expired/)
        return true
      },
    )
    assert.ok(got.length > 3 && got.length < 40, `${got.length} messages before the end`)
  })

  it('limits each user: calls a second, and open streams (ResourceExhausted)', async () => {
    const limited = (overrides: Partial<AuthConfig>) =>
      echoBehindAuth({ ...config, ...overrides }, POLICY, {
        keys: createRemoteJWKSet(new URL(config.jwksUrl), { cooldownDuration: 0 }),
      })
    const ada = { headers: { authorization: `Bearer ${await token({ roles: ['operator'] })}` } }
    const grace = {
      headers: {
        authorization: `Bearer ${await new SignJWT({ roles: ['operator'] })
          .setProtectedHeader({ alg: 'ES256', kid: 'k1' })
          .setSubject('grace@example.com')
          .setIssuer(ISSUER)
          .setAudience('vigil')
          .setExpirationTime('5m')
          .sign(key1.privateKey)}`,
      },
    }
    const slow = limited({ userRatePerSec: 1, userBurst: 2 })
    await slow.echo({ message: '1' }, ada)
    await slow.echo({ message: '2' }, ada)
    await assert.rejects(slow.echo({ message: '3' }, ada), (err: ConnectError) => {
      assert.equal(err.code, Code.ResourceExhausted)
      assert.match(err.rawMessage, /at most 1 calls a second per user/)
      return true
    })
    await slow.echo({ message: 'another user has a bucket of her own' }, grace)

    const one = limited({ userStreams: 1 })
    const first = one.echoStream({ message: 'a', count: 3, intervalMs: 200 }, ada)[Symbol.asyncIterator]()
    await first.next()
    await assert.rejects(
      (async () => {
        for await (const _ of one.echoStream({ message: 'b', count: 1 }, ada));
      })(),
      (err: ConnectError) =>
        err.code === Code.ResourceExhausted && /at most 1 open streams/.test(err.rawMessage),
    )
    while (!(await first.next()).done);
    let after = 0
    for await (const _ of one.echoStream({ message: 'c', count: 1 }, ada)) after++
    assert.equal(after, 1, 'a stream may open once the first one ended')
  })

  it('leaves services outside the policy open (health, reflection)', async () => {
    const open = echoBehindAuth(config, {})
    assert.equal((await open.echo({ message: 'hi' })).message, 'hi')
  })
})
