import { generateKeyPairSync, randomBytes } from 'node:crypto'
import forge from 'node-forge'

/** A certificate and its private key, PEM-encoded. */
export interface CertificatePair {
  cert: string
  key: string
}

export interface IssueOptions {
  commonName: string
  /** The subject's organizational unit: `vigil certs` marks services' certificates (SERVICE_CERT_OU). */
  organizationalUnit?: string
  /** DNS names for the subjectAltName (servers). */
  dnsNames?: string[]
  /** IP addresses for the subjectAltName (servers). */
  ips?: string[]
  /** `server`, `client` or both (default both). */
  usage?: ('server' | 'client')[]
  days?: number
}

function newKeys(): {
  privateKey: forge.pki.rsa.PrivateKey
  publicKey: forge.pki.rsa.PublicKey
  keyPem: string
} {
  // node:crypto makes the key natively (fast); forge only builds and signs the certificate.
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicKeyEncoding: { type: 'spki', format: 'pem' },
    privateKeyEncoding: { type: 'pkcs8', format: 'pem' },
  })
  return {
    privateKey: forge.pki.privateKeyFromPem(privateKey) as forge.pki.rsa.PrivateKey,
    publicKey: forge.pki.publicKeyFromPem(publicKey) as forge.pki.rsa.PublicKey,
    keyPem: privateKey,
  }
}

function baseCertificate(publicKey: forge.pki.rsa.PublicKey, days: number): forge.pki.Certificate {
  const cert = forge.pki.createCertificate()
  cert.publicKey = publicKey
  // A positive serial in minimal DER: first byte 0x01..0x7f (no sign bit, no leading zero byte,
  // which OpenSSL refuses as "illegal padding").
  const serial = randomBytes(16)
  serial[0] = (serial[0]! & 0x7f) | 0x01
  cert.serialNumber = serial.toString('hex')
  cert.validity.notBefore = new Date(Date.now() - 60_000)
  cert.validity.notAfter = new Date(Date.now() + days * 86_400_000)
  return cert
}

/** A self-signed certificate authority for development and tests. */
export function createCertificateAuthority(commonName = 'Vigil development CA', days = 365): CertificatePair {
  const { privateKey, publicKey, keyPem } = newKeys()
  const cert = baseCertificate(publicKey, days)
  const subject = [{ name: 'commonName', value: commonName }]
  cert.setSubject(subject)
  cert.setIssuer(subject)
  cert.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ])
  cert.sign(privateKey, forge.md.sha256.create())
  return { cert: forge.pki.certificateToPem(cert), key: keyPem }
}

/** A certificate signed by `ca` for a server, a client (device or service), or both. */
export function issueCertificate(ca: CertificatePair, opts: IssueOptions): CertificatePair {
  const caCert = forge.pki.certificateFromPem(ca.cert)
  const caKey = forge.pki.privateKeyFromPem(ca.key)
  const { publicKey, keyPem } = newKeys()
  const cert = baseCertificate(publicKey, opts.days ?? 365)
  cert.setSubject([
    { name: 'commonName', value: opts.commonName },
    ...(opts.organizationalUnit ? [{ name: 'organizationalUnitName', value: opts.organizationalUnit }] : []),
  ])
  cert.setIssuer(caCert.subject.attributes)
  const usage = opts.usage ?? ['server', 'client']
  const altNames = [
    ...(opts.dnsNames ?? []).map((value) => ({ type: 2, value })),
    ...(opts.ips ?? []).map((ip) => ({ type: 7, ip })),
  ]
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: usage.includes('server'), clientAuth: usage.includes('client') },
    ...(altNames.length > 0 ? [{ name: 'subjectAltName', altNames }] : []),
  ])
  cert.sign(caKey, forge.md.sha256.create())
  return { cert: forge.pki.certificateToPem(cert), key: keyPem }
}
