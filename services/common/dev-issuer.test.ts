import assert from 'node:assert/strict'
import { statSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { Code, type ConnectError } from '@connectrpc/connect'
import { echoBehindAuth } from '../../test/fixtures/auth.js'
import { tempDir } from '../../test/fixtures/process.js'
import { type AuthConfig, SERVICE_ROLE } from './auth.js'
import { createCertificateAuthority, issueCertificate } from './certs.js'
import { EnvReader } from './config.js'
import { cliTokenSource, tokenFile } from './credentials.js'
import { type DevIssuer, DevKey, startDevIssuer } from './dev-issuer.js'

const DASHBOARD = 'http://127.0.0.1:18080/'

describe('development issuer: a JWKS the services verify against, a sign-in page, CLI tokens', () => {
  const dir = tempDir('dev-issuer')
  let issuer: DevIssuer
  let config: AuthConfig

  /** An echo service that needs `role`, behind the real interceptor reading the issuer's JWKS over HTTP. */
  const echo = (
    role: 'viewer' | 'admin' | typeof SERVICE_ROLE,
    token?: string,
    overrides: Partial<AuthConfig> = {},
  ) =>
    echoBehindAuth(
      { ...config, ...overrides },
      { 'vigil.kit.v1.EchoService': { default: role } },
      { token },
    ).echo({
      message: 'hi',
    })

  before(async () => {
    issuer = await startDevIssuer({ dataDir: dir.path, port: 0, dashboardUrl: DASHBOARD })
    config = {
      jwksUrl: issuer.jwksUrl,
      issuer: issuer.url,
      audience: 'vigil',
      rolesClaim: 'roles',
      clockSkewSeconds: 0,
      userRatePerSec: 0,
      userBurst: 1,
      userStreams: 10,
    }
  })
  after(async () => {
    await issuer.close()
    dir.remove()
  })

  it('keeps its key in the data folder (mode 600) and serves only the public half', async () => {
    const file = join(dir.path, 'auth', 'issuer.json')
    assert.equal(statSync(file).mode & 0o777, 0o600)
    const jwks = (await (await fetch(issuer.jwksUrl)).json()) as { keys: Record<string, unknown>[] }
    assert.equal(jwks.keys.length, 1)
    assert.equal(jwks.keys[0]?.alg, 'ES256')
    assert.equal(jwks.keys[0]?.d, undefined, 'the private part is never published')
    const discovery = (await (await fetch(`${issuer.url}/.well-known/openid-configuration`)).json()) as {
      issuer: string
      jwks_uri: string
    }
    assert.deepEqual(discovery, { ...discovery, issuer: issuer.url, jwks_uri: issuer.jwksUrl })
  })

  it('mints tokens the services accept, with the roles asked for', async () => {
    const admin = await issuer.key.mint({ subject: 'ada', roles: ['admin'], ttlSeconds: 60 })
    assert.equal((await echo('viewer', admin)).message, 'hi')
    await assert.rejects(echo(SERVICE_ROLE, admin), (err: ConnectError) => err.code === Code.PermissionDenied)
    const service = await issuer.key.mint({
      subject: 'service:ingest',
      roles: [SERVICE_ROLE],
      ttlSeconds: 60,
    })
    assert.equal((await echo(SERVICE_ROLE, service)).message, 'hi')
    await assert.rejects(echo('viewer', service), (err: ConnectError) => err.code === Code.PermissionDenied)
    await assert.rejects(echo('viewer'), (err: ConnectError) => err.code === Code.Unauthenticated)
  })

  it('signs people in and sends them back to the dashboard only', async () => {
    const page = await (await fetch(issuer.signInUrl)).text()
    assert.match(page, /<form method="post"/)
    const res = await fetch(issuer.signInUrl, {
      method: 'POST',
      body: new URLSearchParams({ name: 'grace', role: 'operator', redirect: 'https://evil.example/' }),
      redirect: 'manual',
    })
    assert.equal(res.status, 303)
    const location = res.headers.get('location') ?? ''
    assert.ok(location.startsWith(`${DASHBOARD}#access_token=`), location)
    const token = location.slice(`${DASHBOARD}#access_token=`.length)
    assert.equal((await echo('viewer', token)).message, 'hi')
    await assert.rejects(echo('admin', token), (err: ConnectError) => err.code === Code.PermissionDenied)

    for (const form of [
      { name: 'grace', role: 'service' }, // machine credentials are not handed out on the page
      { name: 'grace', role: 'root' },
      { name: '<script>', role: 'admin' },
      { name: '', role: 'admin' },
    ]) {
      const refused = await fetch(issuer.signInUrl, {
        method: 'POST',
        body: new URLSearchParams(form),
        redirect: 'manual',
      })
      assert.equal(refused.status, 400, JSON.stringify(form))
    }
  })

  it('gives the CLI a short-lived admin token from the same key when no token is configured', async () => {
    const source = cliTokenSource(new EnvReader({}), dir.path)
    assert.ok(source, 'the data folder has the issuer key')
    const token = (await source()) as string
    assert.equal((await echo('admin', token)).message, 'hi')
    assert.equal(await source(), token, 'cached until shortly before it expires')
    assert.equal(cliTokenSource(new EnvReader({}), join(dir.path, 'elsewhere')), undefined)
    const literal = cliTokenSource(new EnvReader({ VIGIL_TOKEN: 'abc' }), dir.path)
    assert.equal(await literal?.(), 'abc', 'VIGIL_TOKEN wins over the development key')
    assert.ok((await DevKey.open(dir.path)).issuer === issuer.url)
  })

  it('reads a token file again when it changes (rotation without a restart)', async () => {
    const file = join(dir.path, 'svc.jwt')
    writeFileSync(file, 'first\n')
    const source = tokenFile(file)
    assert.equal(await source(), 'first')
    writeFileSync(file, 'second\n')
    utimesSync(file, new Date(), new Date(Date.now() + 5_000))
    await new Promise((r) => setTimeout(r, 1_100))
    assert.equal(await source(), 'second')
  })

  it('serves https and the services fetch its JWKS trusting VIGIL_AUTH_CA (vigil up --tls)', async () => {
    const ca = createCertificateAuthority('issuer test CA')
    const cert = issueCertificate(ca, {
      commonName: 'issuer',
      dnsNames: ['localhost'],
      ips: ['127.0.0.1'],
      usage: ['server'],
    })
    const secure = await startDevIssuer({
      dataDir: dir.path,
      port: 0,
      dashboardUrl: DASHBOARD,
      tls: { cert: Buffer.from(cert.cert), key: Buffer.from(cert.key) },
    })
    try {
      assert.match(secure.jwksUrl, /^https:/)
      const token = await secure.key.mint({ subject: 'ada', roles: ['viewer'], ttlSeconds: 60 })
      const call = (jwksCa?: Buffer) =>
        echo('viewer', token, { jwksUrl: secure.jwksUrl, issuer: secure.url, ...(jwksCa ? { jwksCa } : {}) })
      assert.equal((await call(Buffer.from(ca.cert))).message, 'hi')
      // Without the CA the issuer's certificate is not trusted: no keys, no entry.
      await assert.rejects(call(), (err: ConnectError) => err.code === Code.Unauthenticated)
    } finally {
      await secure.close()
      // Later rows mint with the plain issuer's URL again.
      issuer.key.setIssuer(issuer.url)
    }
  })
})
