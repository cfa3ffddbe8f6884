import assert from 'node:assert/strict'
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { readFileSync, statSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { after, describe, it } from 'node:test'
import tls from 'node:tls'
import { COMPONENTS } from '../services/cli/certs.js'
import { tempDir } from './fixtures/process.js'
import { startVigil } from './fixtures/services.js'

describe('vigil certs: a development CA and certificates that TLS accepts', () => {
  const dir = tempDir('certs')
  const out = join(dir.path, 'certs')
  after(() => dir.remove())
  const read = (file: string) => readFileSync(join(out, file), 'utf8')

  it('issues a CA, a certificate per component and per device, and keeps them on a second run', async () => {
    const first = startVigil(['certs', '--out', out, '--device', 'dev-1', '--host', 'vigil.example.test'])
    assert.equal(await first.exited, 0, first.output())
    const ca = new X509Certificate(read('ca.pem'))
    assert.ok(ca.ca)
    // Every service and broker gets one (the list itself is the command's).
    for (const needed of ['query', 'ingest', 'inference', 'bridge', 'store', 'nats', 'mosquitto', 'issuer'])
      assert.ok(COMPONENTS.includes(needed), `${needed} has a certificate`)
    for (const name of COMPONENTS) {
      const cert = new X509Certificate(read(`${name}.pem`))
      assert.ok(cert.verify(ca.publicKey), `${name} is signed by the CA`)
      assert.ok(cert.checkPrivateKey(createPrivateKey(read(`${name}-key.pem`))), `${name} key matches`)
      assert.match(
        cert.subjectAltName ?? '',
        /DNS:localhost.*DNS:vigil\.example\.test.*IP Address:127\.0\.0\.1/,
      )
      assert.equal(statSync(join(out, `${name}-key.pem`)).mode & 0o777, 0o600)
      assert.match(cert.subject, /OU=vigil-services/, `${name} is marked as a service (its mTLS identity)`)
    }
    const device = new X509Certificate(read('devices/dev-1.pem'))
    assert.match(device.subject, /CN=dev-1/)
    assert.doesNotMatch(device.subject, /OU=vigil-services/, 'a device certificate is no service credential')
    assert.ok(device.verify(ca.publicKey))

    const again = startVigil(['certs', '--out', out, '--device', 'dev-2'])
    assert.equal(await again.exited, 0, again.output())
    assert.equal(new X509Certificate(read('ca.pem')).fingerprint256, ca.fingerprint256, 'the CA is kept')
    assert.match(again.output(), /devices\/dev-2\.pem\s+device dev-2\s+created/)
    assert.match(again.output(), /query\.pem\s+query\s+kept/)
  })

  it('refuses a device id that is a path', async () => {
    const bad = startVigil(['certs', '--out', out, '--device', '../../etc/x'])
    assert.equal(await bad.exited, 2)
    assert.match(bad.output(), /--device "\.\.\/\.\.\/etc\/x": letters, digits/)
  })

  it('makes certificates a real mTLS handshake accepts, and one without a client certificate fails', async () => {
    const server = tls.createServer(
      {
        cert: read('query.pem'),
        key: read('query-key.pem'),
        ca: read('ca.pem'),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (socket) => socket.end(`hello ${socket.getPeerCertificate().subject?.CN}`),
    )
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as AddressInfo).port
    const connect = (withClientCert: boolean) =>
      new Promise<string>((resolve, reject) => {
        const socket = tls.connect({
          host: '127.0.0.1',
          port,
          servername: 'localhost',
          ca: read('ca.pem'),
          ...(withClientCert ? { cert: read('devices/dev-1.pem'), key: read('devices/dev-1-key.pem') } : {}),
        })
        let data = ''
        socket.on('data', (d) => {
          data += d
        })
        socket.on('end', () => resolve(data))
        socket.on('error', reject)
      })
    try {
      assert.equal(await connect(true), 'hello dev-1')
      await assert.rejects(connect(false))
    } finally {
      server.close()
    }
  })
})
