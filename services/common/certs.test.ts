import assert from 'node:assert/strict'
import { X509Certificate } from 'node:crypto'
import { describe, it } from 'node:test'
import { createCertificateAuthority, issueCertificate } from './certs.js'

describe('certs', () => {
  it('issues certificates with minimal DER serials that the CA verifies', () => {
    const ca = createCertificateAuthority('Vigil test CA')
    const caCert = new X509Certificate(ca.cert)
    for (let i = 0; i < 30; i++) {
      const pair = issueCertificate(ca, {
        commonName: `device-${i}`,
        dnsNames: ['localhost'],
        ips: ['127.0.0.1'],
      })
      const cert = new X509Certificate(pair.cert)
      // OpenSSL refuses a serial with a leading zero byte ("illegal padding") or the sign bit set.
      assert.match(cert.serialNumber, /^[0-7][0-9A-F]{31}$/)
      assert.notEqual(cert.serialNumber.slice(0, 2), '00')
      assert.ok(cert.verify(caCert.publicKey))
      assert.equal(cert.subject, `CN=device-${i}`)
      assert.match(cert.subjectAltName ?? '', /DNS:localhost, IP Address:127\.0\.0\.1/)
    }
    assert.ok(caCert.ca)
  })
})
