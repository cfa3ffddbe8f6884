// The security table: attacks and mistakes against the whole stack as `vigil up` runs it —
// authentication on (its development issuer), a user per service on the bus, an account per device
// on mosquitto — each row with the refusal it must get. One test per row; the count is printed.
// Token edge cases are also unit-tested (services/common/auth.test.ts), the bus per subject in
// test/security/bus.test.ts; here every row goes through the real, running stack.
import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import tls from 'node:tls'
import { create, type DescField, type DescMessage, type DescService, toJson } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { type CallOptions, Code, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { connect as connectNats } from '@nats-io/transport-node'
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT, UnsecuredJWT } from 'jose'
import mqtt from 'mqtt'
import { DeviceService } from '../../gen/vigil/device/v1/device_pb.js'
import { InferenceService } from '../../gen/vigil/inference/v1/inference_pb.js'
import { IngestService } from '../../gen/vigil/ingest/v1/ingest_pb.js'
import { QueryService } from '../../gen/vigil/query/v1/query_pb.js'
import { SERVICE_ROLE } from '../../services/common/auth.js'
import { busUsersFile } from '../../services/common/bus-users.js'
import {
  type CertificatePair,
  createCertificateAuthority,
  issueCertificate,
} from '../../services/common/certs.js'
import { DEFAULT_PORTS } from '../../services/common/config.js'
import { DevKey } from '../../services/common/dev-issuer.js'
import { sleep } from '../../services/common/health.js'
import { eventually } from '../fixtures/bus.js'
import { metricSum } from '../fixtures/metrics.js'
import { type Child, tempDir } from '../fixtures/process.js'
import { type ServiceProcess, startService, startVigilUp } from '../fixtures/services.js'

const HOSTILE = "x' OR 1=1; DROP TABLE vigil.telemetry --"
type Headers = Record<string, string>

describe('security table: the whole stack (vigil up, auth on) refuses each attack', {
  timeout: 300_000,
}, () => {
  const dir = tempDir('security-stack')
  let up: Child
  let offset = 0
  let key: DevKey
  let issuerFile: { kid: string; privateJwk: JWK }
  let tlsIngest: ServiceProcess | undefined
  const devices = new Map<string, string>() // id → MQTT password
  const port = (c: keyof typeof DEFAULT_PORTS) => DEFAULT_PORTS[c] + offset
  const url = (c: keyof typeof DEFAULT_PORTS) => `http://127.0.0.1:${port(c)}`
  const passed: string[] = []
  let rowCount = 0

  const bearer = async (roles: string[], subject = `sec-${roles.join('-')}`): Promise<Headers> => ({
    authorization: `Bearer ${await key.mint({ subject, roles: roles as never, ttlSeconds: 600 })}`,
  })
  const client = <S extends DescService>(service: S, at: keyof typeof DEFAULT_PORTS) =>
    createClient(service, createConnectTransport({ baseUrl: url(at), httpVersion: '1.1' }))
  const query = () => client(QueryService, 'query')
  const registry = () => client(DeviceService, 'query')
  const inference = () => client(InferenceService, 'inference')
  const ingest = () => client(IngestService, 'ingest')
  /** A token signed with the issuer's real key, with claims set by the row. */
  const signed = async (
    edit: (jwt: SignJWT) => SignJWT,
    claims: Record<string, unknown> = { roles: ['admin'] },
  ) =>
    edit(
      new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', kid: issuerFile.kid })
        .setSubject('mallory')
        .setIssuer(key.issuer as string)
        .setAudience('vigil')
        .setIssuedAt(),
    ).sign(await importJWK(issuerFile.privateJwk, 'ES256'))
  const refusedWith = async (code: Code, call: () => Promise<unknown>, detail?: RegExp) => {
    await assert.rejects(call(), (err: unknown) => {
      const e = ConnectError.from(err)
      assert.equal(Code[e.code], Code[code], e.message)
      if (detail) assert.match(e.rawMessage, detail)
      return true
    })
  }
  const mqttConnect = (id: string, password: string, extra: mqtt.IClientOptions = {}) =>
    mqtt.connectAsync(`mqtt://127.0.0.1:${port('mqtt')}`, {
      clientId: id,
      username: id,
      password,
      protocolVersion: 5,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
      ...extra,
    })
  const rejected = async (reason: string) =>
    metricSum(
      await (await fetch(`${url('bridge')}/metrics`)).text(),
      'vigil_rejected_total',
      `reason="${reason}"`,
    )
  const reading = (seq: number) =>
    JSON.stringify({ ts: new Date().toISOString(), sensors: { temp: 20 + (seq % 5) }, seq })

  before(async () => {
    ;({ up, offset } = await startVigilUp(['--no-simulate'], { VIGIL_DATA_DIR: dir.path }))
    key = await DevKey.open(dir.path)
    issuerFile = JSON.parse(readFileSync(join(dir.path, 'auth', 'issuer.json'), 'utf8'))
    const admin = await bearer(['admin'])
    for (const id of ['sec-a', 'sec-b', 'sec-c', 'sec-gone']) {
      const res = await registry().registerDevice({ deviceId: id, site: 'sec' }, { headers: admin })
      devices.set(id, res.credentials?.password as string)
    }
  })
  after(async () => {
    process.stdout.write(`security table: ${passed.length} of ${rowCount} rows passed\n`)
    await tlsIngest?.stop()
    await up?.stop()
    dir.remove()
  })

  /** One row of the table: what is tried, and the refusal it must get. */
  const row = (attack: string, refusal: string, run: () => Promise<void>) => {
    rowCount++
    it(`${attack} → ${refusal}`, async () => {
      await run()
      passed.push(attack)
    })
  }

  // ── Tokens ────────────────────────────────────────────────────────────────────────────────
  row('no token', 'Unauthenticated', () =>
    refusedWith(Code.Unauthenticated, () => query().getFleetSummary({})),
  )
  row('expired token', 'Unauthenticated (expired)', async () => {
    const jwt = await signed((t) => t.setExpirationTime(Math.floor(Date.now() / 1000) - 120))
    await refusedWith(
      Code.Unauthenticated,
      () => query().getFleetSummary({}, { headers: { authorization: `Bearer ${jwt}` } }),
      /expired/,
    )
  })
  row("forged: another key under the issuer's key id", 'Unauthenticated', async () => {
    const other = await generateKeyPair('ES256')
    const jwt = await new SignJWT({ roles: ['admin'] })
      .setProtectedHeader({ alg: 'ES256', kid: issuerFile.kid })
      .setSubject('mallory')
      .setIssuer(key.issuer as string)
      .setAudience('vigil')
      .setExpirationTime('5m')
      .sign(other.privateKey)
    await refusedWith(
      Code.Unauthenticated,
      () => query().getFleetSummary({}, { headers: { authorization: `Bearer ${jwt}` } }),
      /signature/,
    )
  })
  row('wrong audience', 'Unauthenticated', async () => {
    const jwt = await signed((t) => t.setAudience('another-app').setExpirationTime('5m'))
    await refusedWith(
      Code.Unauthenticated,
      () => query().getFleetSummary({}, { headers: { authorization: `Bearer ${jwt}` } }),
      /aud/,
    )
  })
  row('unsigned token (alg: none)', 'Unauthenticated', async () => {
    const jwt = new UnsecuredJWT({ roles: ['admin'] })
      .setSubject('mallory')
      .setIssuer(key.issuer as string)
      .setAudience('vigil')
      .setExpirationTime('5m')
      .encode()
    await refusedWith(Code.Unauthenticated, () =>
      query().getFleetSummary({}, { headers: { authorization: `Bearer ${jwt}` } }),
    )
  })
  row('a public key passed off as an HS256 secret', 'Unauthenticated', async () => {
    const jwk = key.jwks().keys[0] as JWK
    const secret = new TextEncoder().encode(JSON.stringify(await exportJWK(await importJWK(jwk, 'ES256'))))
    const jwt = await new SignJWT({ roles: ['admin'] })
      .setProtectedHeader({ alg: 'HS256', kid: issuerFile.kid })
      .setSubject('mallory')
      .setIssuer(key.issuer as string)
      .setAudience('vigil')
      .setExpirationTime('5m')
      .sign(secret)
    await refusedWith(Code.Unauthenticated, () =>
      query().getFleetSummary({}, { headers: { authorization: `Bearer ${jwt}` } }),
    )
  })
  row('role escalation: a viewer revokes a device', 'PermissionDenied', async () =>
    refusedWith(
      Code.PermissionDenied,
      async () => registry().revokeDevice({ deviceId: 'sec-a' }, { headers: await bearer(['viewer']) }),
      /needs the role admin/,
    ),
  )
  row('role escalation: a viewer token claiming admin in other claims', 'PermissionDenied', async () => {
    const jwt = await signed((t) => t.setExpirationTime('5m'), {
      roles: ['viewer'],
      role: 'admin',
      groups: ['admin'],
    })
    await refusedWith(Code.PermissionDenied, () =>
      inference().promoteModel(
        { name: 'fleet', version: 1, alias: 'production' },
        { headers: { authorization: `Bearer ${jwt}` } },
      ),
    )
  })
  row("an admin's user token on the internal Infer", 'PermissionDenied', async () =>
    refusedWith(
      Code.PermissionDenied,
      async () => inference().inferBatch({ requests: [] }, { headers: await bearer(['admin']) }),
      /needs the role service/,
    ),
  )
  row('a user token publishing readings over IngestService', 'PermissionDenied', async () =>
    refusedWith(Code.PermissionDenied, async () =>
      ingest().publishBatch({ readings: [] }, { headers: await bearer(['operator']) }),
    ),
  )

  // ── Devices on the broker ─────────────────────────────────────────────────────────────────
  row(
    "cross-device: sec-a publishes on sec-b's telemetry topic",
    'Not authorized, nothing stored',
    async () => {
      const a = await mqttConnect('sec-a', devices.get('sec-a') as string)
      try {
        await assert.rejects(
          a.publishAsync('devices/sec-b/telemetry', reading(1), { qos: 1 }),
          /Not authorized/,
        )
        await a.publishAsync('devices/sec-a/telemetry', reading(1), { qos: 1 })
        const viewer = await bearer(['viewer'])
        await eventually(
          async () =>
            (await query().getLatest({ deviceId: 'sec-a' }, { headers: viewer })).reading !== undefined,
          30_000,
          "sec-a's own reading stored",
        )
        await refusedWith(Code.NotFound, () => query().getLatest({ deviceId: 'sec-b' }, { headers: viewer }))
      } finally {
        await a.endAsync()
      }
    },
  )
  row("cross-device: sec-a subscribes to sec-b's commands", 'Not authorized', async () => {
    const a = await mqttConnect('sec-a', devices.get('sec-a') as string)
    try {
      await assert.rejects(a.subscribeAsync('devices/sec-b/commands', { qos: 1 }), /Not authorized/)
      await assert.rejects(a.subscribeAsync('devices/#', { qos: 1 }), /Not authorized/)
    } finally {
      await a.endAsync()
    }
  })
  row('a device with a wrong password, an unknown device', 'Not authorized', async () => {
    await assert.rejects(mqttConnect('sec-c', 'guess'), /Not authorized/)
    await assert.rejects(mqttConnect('nobody', 'guess'), /Not authorized/)
  })
  row('a revoked device connects again', 'Not authorized', async () => {
    await registry().revokeDevice({ deviceId: 'sec-gone' }, { headers: await bearer(['admin']) })
    await eventually(
      async () => {
        try {
          const c = await mqttConnect('sec-gone', devices.get('sec-gone') as string)
          await c.endAsync()
          return false
        } catch (err) {
          return /Not authorized/.test((err as Error).message)
        }
      },
      15_000,
      'the revoked device refused',
    )
  })

  // ── The bus ───────────────────────────────────────────────────────────────────────────────
  row("the bridge's bus user publishes inferences", 'Permissions Violation', async () => {
    const passwords = JSON.parse(readFileSync(busUsersFile(dir.path), 'utf8')) as Record<string, string>
    const nc = await connectNats({
      servers: `127.0.0.1:${port('nats')}`,
      user: 'bridge',
      pass: passwords.bridge,
    })
    const refused = (async () => {
      for await (const s of nc.status())
        if (s.type === 'error' && /permissions violation for publish/i.test(String(s.error))) return true
      return false
    })()
    nc.publish('telemetry.inferred.0', new Uint8Array([1]))
    const seen = await Promise.race([refused, sleep(5_000).then(() => false)])
    await nc.close()
    assert.ok(seen, 'nats-server refused the publish')
  })
  row('a bus client with a wrong password', 'Authorization Violation', async () => {
    await assert.rejects(
      connectNats({ servers: `127.0.0.1:${port('nats')}`, user: 'query', pass: 'guess', reconnect: false }),
      /Authorization Violation/i,
    )
  })

  // ── Oversize and flood ────────────────────────────────────────────────────────────────────
  row('a request over 8 MB', 'ResourceExhausted', async () =>
    refusedWith(Code.ResourceExhausted, async () =>
      registry().registerDevice(
        { deviceId: 'sec-big', labels: { big: 'x'.repeat(9 * 1024 * 1024) } },
        { headers: await bearer(['admin']) },
      ),
    ),
  )
  row('one user floods calls', 'ResourceExhausted after the burst', async () => {
    const h = await bearer(['viewer'], 'sec-flooder')
    const answers = await Promise.allSettled(
      Array.from({ length: 300 }, () => query().getFleetSummary({}, { headers: h })),
    )
    const limited = answers.filter(
      (a) => a.status === 'rejected' && ConnectError.from(a.reason).code === Code.ResourceExhausted,
    ).length
    assert.ok(limited >= 100, `${limited} of 300 calls were limited (burst 100, 50/s)`)
    // Others are not starved by it.
    await query().getFleetSummary({}, { headers: await bearer(['viewer'], 'sec-neighbour') })
  })
  row('one device floods the broker', 'rate-limited readings kept as dead letters', async () => {
    const before = await rejected('rate_limited')
    const c = await mqttConnect('sec-c', devices.get('sec-c') as string)
    try {
      await Promise.all(
        Array.from({ length: 600 }, (_, i) =>
          c.publishAsync('devices/sec-c/telemetry', reading(i + 1), { qos: 1 }),
        ),
      )
    } finally {
      await c.endAsync()
    }
    await eventually(
      async () => (await rejected('rate_limited')) - before >= 100,
      30_000,
      'the flood counted as rate_limited',
    )
  })
  row('an oversize MQTT payload', 'kept as a dead letter (oversize)', async () => {
    const before = await rejected('oversize')
    const c = await mqttConnect('sec-a', devices.get('sec-a') as string)
    try {
      await c.publishAsync('devices/sec-a/telemetry', Buffer.alloc(200 * 1024, 0x41), { qos: 1 })
    } finally {
      await c.endAsync()
    }
    await eventually(
      async () => (await rejected('oversize')) > before,
      30_000,
      'the oversize payload counted',
    )
  })

  // ── SQL-ish ids in every RPC that takes one ───────────────────────────────────────────────
  const services: [DescService, keyof typeof DEFAULT_PORTS][] = [
    [QueryService, 'query'],
    [DeviceService, 'query'],
    [InferenceService, 'inference'],
    [IngestService, 'ingest'],
  ]
  for (const [service, at] of services) {
    for (const method of service.methods) {
      const init = hostileInit(method.input)
      if (!init) continue
      row(
        `${service.name}.${method.name} with SQL-ish ids`,
        'InvalidArgument (or refused as a reading)',
        async () => {
          const headers = await bearer(
            service === IngestService || method.name.startsWith('Infer') ? [SERVICE_ROLE] : ['admin'],
          )
          const outcome = await callAny(service, method.localName, method.methodKind, url(at), init(), {
            headers,
          })
          if (outcome instanceof ConnectError) {
            assert.equal(Code[outcome.code], Code[Code.InvalidArgument], outcome.message)
            return
          }
          // The ingest RPCs answer bad readings inside the response: refused, kept as dead letters.
          const json = toJson(method.output, outcome as never) as {
            accepted?: number
            rejected?: number
            rejections?: unknown[]
          }
          const refused = Number(json.rejected ?? 0) + (json.rejections?.length ?? 0)
          assert.ok(!json.accepted && refused >= 1, JSON.stringify(json))
        },
      )
    }
  }
  row('filters (site, search) with SQL-ish text', 'answered with nothing, never widened', async () => {
    const h = await bearer(['viewer'])
    const listed = await query().listDevices({ site: HOSTILE, search: HOSTILE }, { headers: h })
    assert.equal(listed.devices.length, 0)
    const anomalies = await query().listAnomalies(
      { site: HOSTILE, start: timestampFromMs(Date.now() - 3_600_000), end: timestampFromMs(Date.now()) },
      { headers: h },
    )
    assert.equal(anomalies.anomalies.length, 0)
  })

  // ── Path traversal ────────────────────────────────────────────────────────────────────────
  row("path traversal in the dashboard's file paths", '400/404, never a file outside it', async () => {
    for (const path of [
      '/../../../../etc/passwd',
      '/%2e%2e/%2e%2e/%2e%2e/etc/passwd',
      '/..%2f..%2f..%2fetc%2fpasswd',
      '/assets/..%2f..%2f..%2f..%2fetc/passwd',
      '/%c0%ae%c0%ae/etc/passwd',
      '/index.html%00.js',
    ]) {
      const res = await fetch(`${url('query')}${path}`)
      const body = await res.text()
      assert.ok([400, 404].includes(res.status), `${path}: ${res.status}`)
      assert.doesNotMatch(body, /root:.*:0:0:/, path)
    }
  })
  row('a model name that is a path', 'InvalidArgument', async () =>
    refusedWith(Code.InvalidArgument, async () =>
      inference().getModel({ name: '../../../etc/passwd' }, { headers: await bearer(['viewer']) }),
    ),
  )

  // ── TLS on a service (ingest with VIGIL_TLS_* and a client CA) ────────────────────────────
  describe('TLS', () => {
    let ca: CertificatePair
    let good: CertificatePair
    let stranger: CertificatePair
    let tlsPort = 0
    const connectTls = (opts: tls.ConnectionOptions) =>
      new Promise<tls.TLSSocket>((resolve, reject) => {
        const socket = tls.connect({
          host: '127.0.0.1',
          port: tlsPort,
          servername: 'localhost',
          ca: ca.cert,
          ...opts,
        })
        socket.once('secureConnect', () => resolve(socket))
        socket.once('error', reject)
      })
    /** An HTTP/1.1 readiness request over the socket: the status line, or the error. */
    const probe = async (opts: tls.ConnectionOptions): Promise<string> => {
      const socket = await connectTls({ ALPNProtocols: ['http/1.1'], ...opts })
      return new Promise<string>((resolve, reject) => {
        let got = ''
        socket.on('data', (d) => {
          got += d.toString()
          if (got.includes('\r\n')) {
            resolve(got.split('\r\n')[0] as string)
            socket.destroy()
          }
        })
        socket.once('error', reject)
        socket.once('close', () => resolve(got || 'closed'))
        socket.write('GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n')
      })
    }
    before(async () => {
      ca = createCertificateAuthority('Vigil security table CA')
      const server = issueCertificate(ca, {
        commonName: 'ingest',
        dnsNames: ['localhost'],
        ips: ['127.0.0.1'],
        usage: ['server'],
      })
      good = issueCertificate(ca, { commonName: 'service-client', usage: ['client'] })
      stranger = issueCertificate(createCertificateAuthority('Another CA'), {
        commonName: 'intruder',
        usage: ['client'],
      })
      const files = tempDir('security-tls')
      const write = (name: string, text: string) => {
        const path = join(files.path, name)
        writeFileSync(path, text)
        return path
      }
      const passwords = JSON.parse(readFileSync(busUsersFile(dir.path), 'utf8')) as Record<string, string>
      tlsIngest = await startService(
        'ingest',
        {
          VIGIL_NATS_URL: `nats://127.0.0.1:${port('nats')}`,
          VIGIL_NATS_USER: 'ingest',
          VIGIL_NATS_PASSWORD: passwords.ingest as string,
          VIGIL_TLS_CERT: write('server.pem', server.cert),
          VIGIL_TLS_KEY: write('server-key.pem', server.key),
          VIGIL_TLS_CA: write('ca.pem', ca.cert),
        },
        {
          ready: async (p) => {
            tlsPort = p
            return /^HTTP\/1\.1 200/.test(await probe({ cert: good.cert, key: good.key }))
          },
        },
      )
      tlsPort = tlsIngest.port
    })
    row('clear-text HTTP to a TLS port (downgrade)', 'no HTTP answer', async () => {
      const res = await fetch(`http://127.0.0.1:${tlsPort}/healthz`).catch((err: Error) => err)
      assert.ok(res instanceof Error || res.status >= 400, 'a clear-text request is never served')
    })
    row('a TLS 1.1 client (downgrade)', 'the server answers with a protocol-version alert', async () => {
      // The client is let down to TLS 1.0–1.1 (SECLEVEL=0), so the refusal is the server's.
      await assert.rejects(
        connectTls({
          cert: good.cert,
          key: good.key,
          minVersion: 'TLSv1',
          maxVersion: 'TLSv1.1',
          ciphers: 'DEFAULT@SECLEVEL=0',
        }),
        (err: NodeJS.ErrnoException) => err.code === 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION',
      )
    })
    row('a client certificate from another CA', 'refused', async () => {
      const answer = await probe({ cert: stranger.cert, key: stranger.key }).catch(
        (err: Error) => err.message,
      )
      assert.doesNotMatch(answer, /^HTTP\/1\.1 200/)
    })
    row('no client certificate', 'refused', async () => {
      const answer = await probe({}).catch((err: Error) => err.message)
      assert.doesNotMatch(answer, /^HTTP\/1\.1 200/)
    })
    row('the server checked against another CA by the client', 'the client refuses it', async () => {
      await assert.rejects(
        connectTls({ ca: createCertificateAuthority('Not ours').cert, cert: good.cert, key: good.key }),
        /self.signed|unable to verify|certificate/i,
      )
    })
    row('control: the right client certificate', 'served', async () => {
      assert.match(await probe({ cert: good.cert, key: good.key }), /^HTTP\/1\.1 200/)
    })
  })
})

/** A request for `desc` with every device id (and model name) in it set to a hostile string, or undefined when it takes none. */
function hostileInit(desc: DescMessage, depth = 0): (() => Record<string, unknown>) | undefined {
  const parts: [DescField, () => unknown][] = []
  for (const field of desc.fields) {
    const idField =
      field.name === 'device_id' ||
      field.name === 'device_ids' ||
      (field.name === 'name' && desc.typeName.includes('Model'))
    if (idField && field.fieldKind === 'scalar') parts.push([field, () => HOSTILE])
    else if (idField && field.fieldKind === 'list' && field.listKind === 'scalar')
      parts.push([field, () => [HOSTILE]])
    else if (depth < 1 && field.fieldKind === 'message') {
      const inner = hostileInit(field.message, depth + 1)
      if (inner) parts.push([field, () => inner()])
    } else if (depth < 1 && field.fieldKind === 'list' && field.listKind === 'message') {
      const inner = hostileInit(field.message, depth + 1)
      if (inner) parts.push([field, () => [inner()]])
    }
  }
  if (parts.length === 0) return undefined
  return () => {
    const init: Record<string, unknown> = {}
    for (const [field, value] of parts) init[field.localName] = value()
    // Readings need a time to be judged on their id.
    if (desc.typeName === 'vigil.telemetry.v1.Reading') init.ts = timestampFromMs(Date.now())
    if (
      desc.typeName.endsWith('RangeRequest') ||
      desc.typeName.includes('Anomalies') ||
      desc.typeName.includes('Export')
    ) {
      init.start = timestampFromMs(Date.now() - 3_600_000)
      init.end = timestampFromMs(Date.now())
    }
    return init
  }
}

/** Calls any method with one request; returns the (first) response or the error. */
async function callAny(
  service: DescService,
  localName: string,
  kind: string,
  baseUrl: string,
  init: Record<string, unknown>,
  options: CallOptions,
): Promise<unknown> {
  const method = service.methods.find((m) => m.localName === localName) as DescService['methods'][number]
  const c = createClient(
    service,
    createConnectTransport({ baseUrl, httpVersion: '1.1' }),
  ) as unknown as Record<string, (req: unknown, o: CallOptions) => unknown>
  const request = create(method.input, init as never)
  const call = c[localName] as (req: unknown, o: CallOptions) => unknown
  try {
    if (kind === 'unary') return await call(request, options)
    if (kind === 'server_streaming') {
      for await (const res of call(request, options) as AsyncIterable<unknown>) return res
      return undefined
    }
    const one = (async function* () {
      yield request
    })()
    return await call(one, options)
  } catch (err) {
    return ConnectError.from(err)
  }
}
