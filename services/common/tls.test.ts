import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import tls from 'node:tls'
import { promisify } from 'node:util'
import { Code, ConnectError, createClient, type Interceptor } from '@connectrpc/connect'
import { createConnectTransport, createGrpcTransport } from '@connectrpc/connect-node'
import { EchoService } from '../../gen/vigil/kit/v1/kit_pb.js'
import { dynamicClient, grpc, PROTO, unary } from '../../test/fixtures/grpc.js'
import { tempDir } from '../../test/fixtures/process.js'
import { SERVICE_CERT_OU, SERVICE_ROLE, userAuthentication } from './auth.js'
import { type CertificatePair, createCertificateAuthority, issueCertificate } from './certs.js'
import { echoRoutes } from './echo.js'
import { createLogger } from './log.js'
import { Metrics } from './metrics.js'
import { type RunningServer, startServer } from './server.js'

const run = promisify(execFile)
const log = createLogger({ service: 'cli', logLevel: 'silent' })
const base = {
  service: 'cli' as const,
  host: '127.0.0.1',
  port: 0,
  corsOrigins: ['*'],
  shutdownTimeoutMs: 5_000,
}

let ca: CertificatePair
let serverCert: CertificatePair
let clientCert: CertificatePair
let strangerCert: CertificatePair
const dir = tempDir('tls')

before(() => {
  ca = createCertificateAuthority('Vigil test CA')
  serverCert = issueCertificate(ca, {
    commonName: 'localhost',
    dnsNames: ['localhost'],
    ips: ['127.0.0.1'],
    usage: ['server'],
  })
  clientCert = issueCertificate(ca, { commonName: 'service-ingest', usage: ['client'] })
  strangerCert = issueCertificate(createCertificateAuthority('Someone else'), {
    commonName: 'intruder',
    usage: ['client'],
  })
  writeFileSync(join(dir.path, 'ca.pem'), ca.cert)
})
after(() => dir.remove())

describe('kit server with TLS (h2 and HTTP/1.1 by ALPN)', () => {
  let server: RunningServer
  before(async () => {
    server = await startServer({
      config: { ...base, tls: { cert: Buffer.from(serverCert.cert), key: Buffer.from(serverCert.key) } },
      log,
      metrics: new Metrics('cli'),
      routes: echoRoutes,
    })
    server.health.markStarted()
  })
  after(() => server.close())

  it('serves https URLs', () => assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/))

  it('answers connect-node over HTTP/2 and gRPC with the test CA', async () => {
    const nodeOptions = { ca: ca.cert }
    const connect = createClient(
      EchoService,
      createConnectTransport({ baseUrl: server.url, httpVersion: '2', nodeOptions }),
    )
    assert.equal((await connect.echo({ message: 'h2' })).message, 'h2')
    const grpcClient = createClient(EchoService, createGrpcTransport({ baseUrl: server.url, nodeOptions }))
    assert.equal((await grpcClient.echo({ message: 'grpc' })).message, 'grpc')
  })

  it('answers curl over HTTP/1.1 and refuses a client that does not trust the server', async () => {
    const args = [
      '-sS',
      '--http1.1',
      '-X',
      'POST',
      '-H',
      'Content-Type: application/json',
      '-d',
      '{"message":"tls"}',
    ]
    const url = `${server.url}/vigil.kit.v1.EchoService/Echo`
    const ok = await run('curl', [...args, '--cacert', join(dir.path, 'ca.pem'), url])
    assert.deepEqual(JSON.parse(ok.stdout), { message: 'tls' })
    await assert.rejects(run('curl', [...args, url]), /certificate/i)
  })

  it('answers grpc-js with SSL credentials', async () => {
    const client = dynamicClient(
      PROTO.kit,
      'vigil.kit.v1.EchoService',
      server.url.replace('https://127.0.0.1', 'localhost'),
      grpc.credentials.createSsl(Buffer.from(ca.cert)),
    )
    try {
      assert.equal((await unary<{ message: string }>(client, 'echo', { message: 'ssl' })).message, 'ssl')
    } finally {
      client.close()
    }
  })
})

/** The echo server with TLS and client certificates asked of `ca` (required unless `optional`). */
function mtlsServer(opts: { clientAuth?: 'require' | 'optional'; authenticate?: Interceptor } = {}) {
  return startServer({
    config: {
      ...base,
      tls: {
        cert: Buffer.from(serverCert.cert),
        key: Buffer.from(serverCert.key),
        ca: Buffer.from(ca.cert),
        ...(opts.clientAuth ? { clientAuth: opts.clientAuth } : {}),
      },
    },
    log,
    metrics: new Metrics('cli'),
    routes: echoRoutes,
    authenticate: opts.authenticate,
  })
}

describe('kit server with mutual TLS', () => {
  let server: RunningServer
  before(async () => {
    server = await mtlsServer()
  })
  after(() => server.close())

  const call = (nodeOptions: { ca: string; cert?: string; key?: string }) =>
    createClient(
      EchoService,
      createConnectTransport({ baseUrl: server.url, httpVersion: '2', nodeOptions }),
    ).echo({
      message: 'm',
    })

  it('answers a client whose certificate the CA signed', async () => {
    assert.equal((await call({ ca: ca.cert, cert: clientCert.cert, key: clientCert.key })).message, 'm')
  })

  it('refuses a client without a certificate', async () => {
    const err = await call({ ca: ca.cert }).catch((e: unknown) => ConnectError.from(e))
    assert.ok(err instanceof ConnectError, 'the call must fail')
    assert.match(err.message, /certificate required/)
  })

  it('refuses a client whose certificate another CA signed', async () => {
    const err = await call({ ca: ca.cert, cert: strangerCert.cert, key: strangerCert.key }).catch(
      (e: unknown) => ConnectError.from(e),
    )
    assert.ok(err instanceof ConnectError, 'the call must fail')
    // A raw TLS client that sends a plain request gets no answer: the server drops the connection.
    assert.equal(await rawRequest(server.port, strangerCert), 'refused')
    assert.equal(await rawRequest(server.port, clientCert), 'answered')
  })
})

describe('kit server with optional client certificates: a service certificate is a service credential', () => {
  let server: RunningServer
  let serviceCert: CertificatePair
  let deviceCert: CertificatePair
  before(async () => {
    serviceCert = issueCertificate(ca, {
      commonName: 'ingest',
      organizationalUnit: SERVICE_CERT_OU,
      usage: ['client'],
    })
    deviceCert = issueCertificate(ca, {
      commonName: 'ingest',
      organizationalUnit: 'vigil-devices',
      usage: ['client'],
    })
    const auth = {
      jwksUrl: 'http://127.0.0.1:9/unused',
      issuer: 'https://issuer.test',
      audience: 'vigil',
      rolesClaim: 'roles',
      clockSkewSeconds: 0,
      userRatePerSec: 0,
      userBurst: 1,
      userStreams: 1,
    }
    server = await mtlsServer({
      clientAuth: 'optional',
      authenticate: userAuthentication(auth, { 'vigil.kit.v1.EchoService': { default: SERVICE_ROLE } }),
    })
  })
  after(() => server.close())

  const call = (client?: CertificatePair) =>
    createClient(
      EchoService,
      createConnectTransport({
        baseUrl: server.url,
        httpVersion: '2',
        nodeOptions: { ca: ca.cert, ...(client ? { cert: client.cert, key: client.key } : {}) },
      }),
    )
      .echo({ message: 'm' })
      .catch((e: unknown) => ConnectError.from(e))

  it("opens service RPCs to a service's certificate, without a token", async () => {
    const res = await call(serviceCert)
    assert.ok(!(res instanceof ConnectError), String(res))
    assert.equal(res.message, 'm')
  })

  it("asks a device's certificate (same CA) and no certificate for a token", async () => {
    for (const client of [deviceCert, undefined]) {
      const err = await call(client)
      assert.ok(err instanceof ConnectError)
      assert.equal(err.code, Code.Unauthenticated, err.message)
    }
  })

  it('refuses a certificate from another CA, though certificates are optional', async () => {
    const err = await call(strangerCert)
    assert.ok(err instanceof ConnectError)
    assert.notEqual(err.code, Code.Unauthenticated, 'refused at the connection, before any RPC')
    assert.equal(await rawRequest(server.port, strangerCert), 'refused')
  })
})

/** Sends GET /healthz over TLS/HTTP 1.1 with a client certificate; says whether anything answered. */
function rawRequest(port: number, client: CertificatePair): Promise<'answered' | 'refused'> {
  return new Promise((resolve) => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port,
      servername: 'localhost',
      ca: ca.cert,
      cert: client.cert,
      key: client.key,
      ALPNProtocols: ['http/1.1'],
    })
    socket.once('secureConnect', () => socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'))
    socket.once('data', () => {
      resolve('answered')
      socket.destroy()
    })
    socket.once('error', () => resolve('refused'))
    socket.once('close', () => resolve('refused'))
    socket.setTimeout(5_000, () => socket.destroy())
  })
}
