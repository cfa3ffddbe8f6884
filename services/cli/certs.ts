// `vigil certs`: a development CA and a certificate for every component and for the devices named,
// made with node:crypto and node-forge (no openssl needed). Files that exist are kept, so running
// it again adds what is missing (a new device) without invalidating what was handed out.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { SERVICE_CERT_OU } from '../common/auth.js'
import { type CertificatePair, createCertificateAuthority, issueCertificate } from '../common/certs.js'
import { EnvReader } from '../common/config.js'
import { printTable } from './table.js'

export const CERTS_HELP = `vigil certs — a development CA and certificates for every component and device

Usage: vigil certs [--out DIR] [--device ID]... [--host NAME]... [--days N] [--force]

Writes into DIR (default VIGIL_DATA_DIR/certs): ca.pem and ca-key.pem, then <component>.pem and
<component>-key.pem for query, ingest, inference, bridge, store, nats, mosquitto, clickhouse and issuer
(server and client use; names localhost, vigil-<component>, every --host, 127.0.0.1 and ::1), and
devices/<ID>.pem and devices/<ID>-key.pem for each --device (client use, CN = the device id).
Existing files are kept unless --force re-issues the component and device certificates (the CA
is never replaced: delete ca.pem to start over). Keys are written with mode 600.

For development only: production certificates come from your own PKI.
`

/** The components that get a certificate (`<name>.pem`, `<name>-key.pem`). */
export const COMPONENTS = [
  'query',
  'ingest',
  'inference',
  'bridge',
  'store',
  'nats',
  'mosquitto',
  'clickhouse',
  'issuer',
]
const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/

export async function certs(argv: string[]): Promise<number> {
  const { values: flags } = parseArgs({
    args: argv,
    options: {
      out: { type: 'string' },
      device: { type: 'string', multiple: true },
      host: { type: 'string', multiple: true },
      days: { type: 'string' },
      force: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (flags.help) {
    process.stdout.write(CERTS_HELP)
    return 0
  }
  const r = new EnvReader()
  const dataDir = resolve(r.string('VIGIL_DATA_DIR', '.vigil'))
  r.done()
  const days = Number(flags.days ?? 365)
  const problems: string[] = []
  if (!Number.isInteger(days) || days < 1 || days > 3650)
    problems.push('--days: a whole number from 1 to 3650')
  for (const id of flags.device ?? [])
    if (!DEVICE_ID.test(id))
      problems.push(`--device "${id}": letters, digits and . _ : - (at most 128), no path`)
  for (const host of flags.host ?? [])
    if (!/^[A-Za-z0-9.-]{1,253}$/.test(host)) problems.push(`--host "${host}": a DNS name`)
  if (problems.length > 0) {
    process.stderr.write(`vigil certs: ${problems.join('; ')}\n\n${CERTS_HELP}`)
    return 2
  }
  const out = resolve(flags.out ?? join(dataDir, 'certs'))
  const rows = issueCertificates(out, {
    devices: flags.device ?? [],
    hosts: flags.host ?? [],
    days,
    force: Boolean(flags.force),
  })
  const caFile = join(out, 'ca.pem')
  const say = (line: string) => process.stdout.write(`${line}\n`)
  printTable(
    ['FILE', 'SUBJECT', 'STATE'],
    rows.map((row) => [row.file, row.subject, row.state]),
    say,
  )
  process.stdout.write(
    '\nServe TLS with them, for example for the query service:\n' +
      `  VIGIL_TLS_CERT=${join(out, 'query.pem')} VIGIL_TLS_KEY=${join(out, 'query-key.pem')} ` +
      `VIGIL_TLS_CA=${caFile}   # the CA also makes clients show a certificate (mTLS)\n`,
  )
  return 0
}

/**
 * Makes what is missing in `out`: the CA, a certificate per component (OU vigil-services: their
 * mTLS identity) and per device (OU vigil-devices, CN = the id). Existing files are kept unless
 * `force` (the CA always is). Returns what it did, a row per file.
 */
export function issueCertificates(
  out: string,
  opts: { devices?: string[]; hosts?: string[]; days?: number; force?: boolean } = {},
): { file: string; subject: string; state: string }[] {
  const days = opts.days ?? 365
  mkdirSync(join(out, 'devices'), { recursive: true })
  const rows: { file: string; subject: string; state: string }[] = []

  const caFile = join(out, 'ca.pem')
  const caKeyFile = join(out, 'ca-key.pem')
  let ca: CertificatePair
  if (existsSync(caFile) && existsSync(caKeyFile)) {
    ca = { cert: readFileSync(caFile, 'utf8'), key: readFileSync(caKeyFile, 'utf8') }
    rows.push({ file: caFile, subject: 'Vigil development CA', state: 'kept' })
  } else {
    ca = createCertificateAuthority('Vigil development CA', days)
    write(caFile, caKeyFile, ca)
    rows.push({ file: caFile, subject: 'Vigil development CA', state: 'created' })
  }
  const issue = (name: string, file: string, certOpts: Parameters<typeof issueCertificate>[1]) => {
    const keyFile = file.replace(/\.pem$/, '-key.pem')
    if (!opts.force && existsSync(file) && existsSync(keyFile)) {
      rows.push({ file, subject: name, state: 'kept' })
      return
    }
    write(file, keyFile, issueCertificate(ca, { ...certOpts, days }))
    rows.push({ file, subject: name, state: 'created' })
  }
  for (const component of COMPONENTS)
    issue(component, join(out, `${component}.pem`), {
      commonName: component,
      organizationalUnit: SERVICE_CERT_OU,
      dnsNames: ['localhost', `vigil-${component}`, component, ...(opts.hosts ?? [])],
      ips: ['127.0.0.1', '::1'],
    })
  for (const id of opts.devices ?? [])
    issue(`device ${id}`, join(out, 'devices', `${id}.pem`), {
      commonName: id,
      organizationalUnit: 'vigil-devices',
      usage: ['client'],
    })
  return rows
}

function write(certFile: string, keyFile: string, pair: CertificatePair): void {
  writeFileSync(certFile, pair.cert)
  writeFileSync(keyFile, pair.key, { mode: 0o600 })
}
