// NATS users per service, each allowed only the subjects its work needs (ARCHITECTURE.md, Bus):
// a service that publishes outside them is refused by the server. Every service may use the
// JetStream API and reply inboxes; the data subjects, KV buckets and object store are split.
import { randomBytes } from 'node:crypto'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { BUS } from './nats.js'

export const BUS_USERS = ['bridge', 'ingest', 'inference', 'store', 'query', 'admin'] as const
export type BusUser = (typeof BUS_USERS)[number]

interface Permissions {
  publish: string[]
  subscribe: string[]
}

// JetStream API calls (stream and consumer info, consumer creation, KV gets) and replies to
// requests go through these; acknowledgements are per stream.
const JETSTREAM = ['$JS.API.>', '_INBOX.>']
const ack = (...streams: string[]) => streams.map((s) => `$JS.ACK.${s}.>`)
const kv = (bucket: string) => `$KV.${bucket}.>`
const DEAD_LETTERS = 'telemetry.rejected.>'
const { streams } = BUS

export const BUS_PERMISSIONS: Record<BusUser, Permissions> = {
  // Readings and dead letters in; commands out to devices, their answers back; device accounts.
  bridge: {
    publish: [...JETSTREAM, 'telemetry.raw.>', DEAD_LETTERS, 'device.ack.>'],
    subscribe: ['_INBOX.>', 'device.cmd.>', 'device.provision'],
  },
  ingest: {
    publish: [...JETSTREAM, 'telemetry.raw.>', DEAD_LETTERS],
    subscribe: ['_INBOX.>'],
  },
  // Reads raw, publishes inferred and alerts; owns the model registry.
  inference: {
    publish: [
      ...JETSTREAM,
      ...ack(streams.telemetry),
      'telemetry.inferred.>',
      DEAD_LETTERS,
      'alerts.>',
      kv(BUS.kv.modelAliases),
      `$O.${BUS.objectStore.models}.>`,
    ],
    subscribe: ['_INBOX.>'],
  },
  // Reads everything it stores.
  store: {
    publish: [...JETSTREAM, ...ack(streams.telemetry, streams.inferences, streams.rejected), DEAD_LETTERS],
    subscribe: ['_INBOX.>'],
  },
  // The store's rights (it runs the writer with embedded ClickHouse), plus the device registry and
  // commands, and live subscriptions for Watch.
  query: {
    publish: [
      ...JETSTREAM,
      ...ack(streams.telemetry, streams.inferences, streams.rejected, streams.commands),
      DEAD_LETTERS,
      kv(BUS.kv.devices),
      kv(BUS.kv.commands),
      'commands.>',
      'device.cmd.>',
      'device.provision',
    ],
    subscribe: ['_INBOX.>', 'telemetry.raw.>', 'telemetry.inferred.>', 'alerts.>', 'device.ack.>'],
  },
  // `vigil up` and the command line (provisioning, training, model management).
  admin: { publish: ['>'], subscribe: ['>'] },
}

/** The variable a deployment's nats-server reads a bus user's password from. */
export const passwordVariable = (user: BusUser) => `VIGIL_NATS_PASSWORD_${user.toUpperCase()}`

/**
 * A nats-server configuration: JetStream on, one user per service with its permissions. Without
 * `passwords`, each password is read from the environment at start (`$VIGIL_NATS_PASSWORD_<USER>`),
 * which is how deploy/nats/nats.conf is written.
 */
export function natsServerConfig(opts: {
  host: string
  port: number
  storeDir: string
  passwords?: Record<BusUser, string>
  monitorPort?: number
  /** Clients must speak TLS (they authenticate with their passwords over it). */
  tls?: { certFile: string; keyFile: string }
}): string {
  const list = (subjects: string[]) => `[${subjects.map((s) => JSON.stringify(s)).join(', ')}]`
  const users = BUS_USERS.map((user) => {
    const p = BUS_PERMISSIONS[user]
    const password = opts.passwords ? JSON.stringify(opts.passwords[user]) : `$${passwordVariable(user)}`
    return (
      `    { user: ${JSON.stringify(user)}, password: ${password},\n` +
      `      permissions: { publish: { allow: ${list(p.publish)} }, subscribe: { allow: ${list(p.subscribe)} } } }`
    )
  })
  return [
    `host: ${JSON.stringify(opts.host)}`,
    `port: ${opts.port}`,
    ...(opts.monitorPort ? [`http_port: ${opts.monitorPort}`] : []),
    `jetstream { store_dir: ${JSON.stringify(opts.storeDir)} }`,
    ...(opts.tls
      ? [
          `tls { cert_file: ${JSON.stringify(opts.tls.certFile)}, key_file: ${JSON.stringify(opts.tls.keyFile)}, timeout: 2 }`,
        ]
      : []),
    'authorization {',
    '  users: [',
    users.join(',\n'),
    '  ]',
    '}',
    '',
  ].join('\n')
}

/** Where `vigil up` keeps the bus users' passwords (mode 600), in its NATS folder. */
export const busUsersFile = (dataDir: string) => join(dataDir, 'nats', 'users.json')

/** The passwords of the bus users: read from `file`, or made once and written there. */
export function busPasswords(file: string): Record<BusUser, string> {
  const known: Partial<Record<BusUser, string>> = existsSync(file)
    ? JSON.parse(readFileSync(file, 'utf8'))
    : {}
  let added = false
  for (const user of BUS_USERS) {
    if (known[user]) continue
    known[user] = randomBytes(18).toString('base64url')
    added = true
  }
  if (added) writeFileSync(file, `${JSON.stringify(known, null, 1)}\n`, { mode: 0o600 })
  return known as Record<BusUser, string>
}

/**
 * Credentials for the command line on a stack `vigil up` runs: VIGIL_NATS_USER/PASSWORD when set,
 * else the admin user from the data folder (when there is one).
 */
export function cliBusCredentials(
  dataDir: string,
  env: Record<string, string | undefined> = process.env,
): { natsUser?: string; natsPassword?: string } {
  if (env.VIGIL_NATS_USER || env.VIGIL_NATS_TOKEN)
    return { natsUser: env.VIGIL_NATS_USER, natsPassword: env.VIGIL_NATS_PASSWORD }
  const file = busUsersFile(dataDir)
  if (!existsSync(file)) return {}
  const admin = (JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>).admin
  return admin ? { natsUser: 'admin', natsPassword: admin } : {}
}

/** deploy/nats/nats.conf: the users for a deployment, passwords from the environment. */
export function deployNatsConfig(): string {
  return (
    '# Generated from services/common/bus-users.ts (test/security/bus.test.ts checks it is current).\n' +
    '# One user per service, allowed only its subjects; passwords come from the environment\n' +
    `# (${BUS_USERS.map(passwordVariable).join(', ')}),\n` +
    '# each starting with a letter: nats-server reads them as config values.\n' +
    natsServerConfig({ host: '0.0.0.0', port: 4222, storeDir: '/data', monitorPort: 8222 })
  )
}
