import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { SERVICE_ROLE } from '../common/auth.js'
import {
  type BusUser,
  busPasswords as busPasswordsIn,
  busUsersFile,
  natsServerConfig,
} from '../common/bus-users.js'
import { DEFAULT_PORTS, EnvReader } from '../common/config.js'
import { type DevIssuer, type DevKey, startDevIssuer, type TokenRequest } from '../common/dev-issuer.js'
import { dynsecPluginPath, initialDynsecConfig } from '../common/dynsec.js'
import { createLogger } from '../common/log.js'
import { mosquittoConfig } from '../common/mosquitto.js'
import { connectNats, provisionBus } from '../common/nats.js'
import { waitForPort } from '../common/net.js'
import { issueCertificates } from './certs.js'
import { ensurePortFree, ensureWritableDir, findExecutable, MissingPrerequisite } from './prerequisites.js'
import { Supervised } from './supervisor.js'
import { printTable } from './table.js'

/** The services `vigil up` runs, in start order, with the issue that builds each one. */
const SERVICES = [
  { name: 'ingest', issue: 'Ingest' },
  { name: 'inference', issue: 'Inference' },
  // With embedded ClickHouse only one process may open the data folder: the query service then runs
  // the store's writer itself and no separate store is started (ARCHITECTURE.md, Storage).
  { name: 'store', issue: 'Analytics', serverOnly: true },
  { name: 'query', issue: 'Analytics' },
  { name: 'bridge', issue: 'Ingest' },
] as const

const repoRoot = resolve(
  fileURLToPath(new URL('.', import.meta.url)),
  import.meta.url.includes('/dist/') ? '../../..' : '../..',
)

interface Row {
  component: string
  address: string
  state: string
}

/** `vigil up`: the whole stack on one machine, on embedded defaults, until Ctrl-C. */
export async function up(argv: string[]): Promise<number> {
  let flags: ReturnType<typeof parseFlags>
  try {
    flags = parseFlags(argv)
  } catch (err) {
    process.stderr.write(`vigil up: ${(err as Error).message}\n  fix: ${(err as MissingPrerequisite).fix}\n`)
    return 2
  }
  // Every port `vigil up` listens on: its default, moved by --port-offset.
  const ports = Object.fromEntries(
    Object.entries(DEFAULT_PORTS).map(([k, p]) => [k, p + flags.portOffset]),
  ) as { [K in keyof typeof DEFAULT_PORTS]: number }
  const moveAll = 'or move every port with --port-offset N'
  const r = new EnvReader()
  const dataDir = resolve(r.string('VIGIL_DATA_DIR', '.vigil'))
  const natsUrl = r.url('VIGIL_NATS_URL', undefined, ['nats', 'tls'])
  const mqttUrl = r.url('VIGIL_MQTT_URL', undefined, ['mqtt', 'mqtts', 'tcp', 'ssl'])
  const clickhouseUrl = r.url('VIGIL_CLICKHOUSE_URL', undefined, ['http', 'https'])
  const externalIssuer = r.optionalString('VIGIL_AUTH_JWKS_URL') !== undefined
  r.done()

  const log = createLogger({ service: 'cli', logLevel: 'warn' })
  const say = (line: string) => process.stdout.write(`${line}\n`)
  const children: Supervised[] = []
  const rows: Row[] = []
  /** How the services reach the broker `vigil up` started (the bridge's account, dynamic security). */
  const brokerEnv: Record<string, string> = {}
  const logDir = join(dataDir, 'logs')
  /** How each process authenticates: the services' verification settings and its own token file. */
  const authEnv: Record<string, string> = {}
  const tokenEnv: Partial<Record<TokenHolder, Record<string, string>>> = {}
  let issuer: DevIssuer | undefined
  let refreshTokens: NodeJS.Timeout | undefined

  try {
    ensureWritableDir(dataDir)
    mkdirSync(logDir, { recursive: true })
    // TLS everywhere (--tls): certificates from the development CA, made once in the data folder.
    const certDir = join(dataDir, 'certs')
    const tls = flags.tls
      ? (() => {
          issueCertificates(certDir)
          const pem = (name: string) => ({
            certFile: join(certDir, `${name}.pem`),
            keyFile: join(certDir, `${name}-key.pem`),
          })
          return { ca: join(certDir, 'ca.pem'), pem }
        })()
      : undefined
    const scheme = tls ? 'https' : 'http'
    /** A service's TLS: its certificate, the CA it asks clients' (optional) certificates of, and trusts. */
    const serviceTls = (name: string): Record<string, string> =>
      tls
        ? {
            VIGIL_TLS_CERT: tls.pem(name).certFile,
            VIGIL_TLS_KEY: tls.pem(name).keyFile,
            VIGIL_TLS_CA: tls.ca,
            VIGIL_TLS_CLIENT_AUTH: 'optional',
          }
        : {}
    const busTls: Record<string, string> = tls ? { VIGIL_NATS_CA: tls.ca } : {}

    // NATS: ours unless one is configured.
    let busUrl = natsUrl
    let busPasswords: Record<BusUser, string> | undefined
    /** A service's bus user (only on the nats-server started here). */
    const busUser = (user: BusUser): Record<string, string> =>
      busPasswords ? { VIGIL_NATS_USER: user, VIGIL_NATS_PASSWORD: busPasswords[user] } : {}
    if (!busUrl) {
      const binary = findExecutable('nats-server')
      if (!binary) {
        throw new MissingPrerequisite(
          'nats-server is not installed',
          'install it (sudo apt-get install nats-server) or set VIGIL_NATS_URL to a running server',
        )
      }
      await ensurePortFree(
        ports.nats,
        '127.0.0.1',
        'nats-server',
        `set VIGIL_NATS_URL to use a running server, ${moveAll}`,
      )
      const store = join(dataDir, 'nats')
      mkdirSync(store, { recursive: true })
      // One NATS user per service, allowed only its subjects; vigil up and the CLI use `admin`.
      busPasswords = busPasswordsIn(busUsersFile(dataDir))
      const natsConf = join(store, 'nats.conf')
      writeFileSync(
        natsConf,
        natsServerConfig({
          host: '127.0.0.1',
          port: ports.nats,
          storeDir: store,
          passwords: busPasswords,
          tls: tls?.pem('nats'),
        }),
        { mode: 0o600 },
      )
      const nats = new Supervised(
        { name: 'nats-server', command: binary, args: ['-c', natsConf], logDir },
        say,
      )
      nats.start()
      children.push(nats)
      await waitForPort(ports.nats, { timeoutMs: 15_000, alive: () => nats.running })
      busUrl = `${tls ? 'tls' : 'nats'}://127.0.0.1:${ports.nats}`
      rows.push({
        component: 'nats-server',
        address: busUrl,
        state: `started with a user per service${tls ? ', TLS only' : ''} (JetStream data in ${store})`,
      })
    } else {
      rows.push({ component: 'nats', address: busUrl, state: 'configured (VIGIL_NATS_URL)' })
    }
    const nc = await connectNats(
      {
        service: 'cli',
        natsUrl: busUrl,
        natsCa: tls ? readFileSync(tls.ca) : undefined,
        ...(busPasswords ? { natsUser: 'admin', natsPassword: busPasswords.admin } : {}),
      },
      log,
      { waitMs: 10_000 },
    )
    await provisionBus(nc, log)
    await nc.drain()
    rows.push({
      component: 'bus',
      address: busUrl,
      state: 'streams TELEMETRY, INFERENCES, REJECTED, COMMANDS ready',
    })

    // Users and roles: the development issuer unless one is configured or --no-auth.
    if (externalIssuer) {
      rows.push({
        component: 'auth',
        address: process.env.VIGIL_AUTH_JWKS_URL as string,
        state: 'configured (VIGIL_AUTH_JWKS_URL); give ingest and the simulator VIGIL_TOKEN_FILE',
      })
    } else if (flags.auth) {
      await ensurePortFree(ports.issuer, '127.0.0.1', 'the development issuer', `use --no-auth, ${moveAll}`)
      issuer = await startDevIssuer({
        dataDir,
        port: ports.issuer,
        dashboardUrl: `${scheme}://127.0.0.1:${ports.query}/`,
        tls: tls
          ? { cert: readFileSync(tls.pem('issuer').certFile), key: readFileSync(tls.pem('issuer').keyFile) }
          : undefined,
      })
      const devIssuer = issuer
      Object.assign(authEnv, {
        VIGIL_AUTH_JWKS_URL: devIssuer.jwksUrl,
        VIGIL_AUTH_ISSUER: devIssuer.url,
        VIGIL_AUTH_SIGN_IN_URL: devIssuer.signInUrl,
        ...(tls ? { VIGIL_AUTH_CA: tls.ca } : {}),
      })
      const write = () => writeServiceTokens(devIssuer.key, join(dataDir, 'auth', 'tokens'))
      Object.assign(tokenEnv, await write())
      // Tokens last a day and are renewed every hour; the services re-read the files.
      refreshTokens = setInterval(() => {
        write().catch((err: Error) => say(`vigil up: renewing service tokens failed: ${err.message}`))
      }, 3_600_000)
      rows.push({
        component: 'auth',
        address: devIssuer.url,
        state: `development issuer: sign in at ${devIssuer.signInUrl}`,
      })
    } else {
      rows.push({ component: 'auth', address: '-', state: 'off (--no-auth): every RPC is open' })
    }

    const brokerUrl = mqttUrl ?? (tls ? `mqtts://localhost:${ports.mqtts}` : `mqtt://127.0.0.1:${ports.mqtt}`)
    if (tls && !mqttUrl) brokerEnv.VIGIL_MQTT_CA = tls.ca
    // Where the services find each other.
    const wiring = {
      VIGIL_NATS_URL: busUrl,
      VIGIL_MQTT_URL: brokerUrl,
      VIGIL_DATA_DIR: dataDir,
      VIGIL_QUERY_ADDR: `${scheme}://127.0.0.1:${ports.query}`,
      VIGIL_INFERENCE_ADDR: `${scheme}://127.0.0.1:${ports.inference}`,
      ...busTls,
    }
    // MQTT: mosquitto from PATH, else the embedded broker, unless a broker is configured.
    if (!mqttUrl) {
      const binary = findExecutable('mosquitto')
      if (tls && !binary)
        throw new MissingPrerequisite(
          '--tls needs mosquitto (the embedded broker has no TLS)',
          'install it (sudo apt-get install mosquitto) or set VIGIL_MQTT_URL to a broker with TLS',
        )
      const mqttPort = tls ? ports.mqtts : ports.mqtt
      await ensurePortFree(
        mqttPort,
        '127.0.0.1',
        'the MQTT broker',
        `set VIGIL_MQTT_URL to use a running broker, ${moveAll}`,
      )
      let broker: Supervised
      let state: string
      // Devices need their own account (vigil devices add): the bridge's is made here once and kept
      // in the data folder, so a second start reuses it.
      const bridgeAccount = brokerAccount(join(dataDir, 'mosquitto'))
      if (binary) {
        const dir = join(dataDir, 'mosquitto')
        const file = join(dir, 'mosquitto.conf')
        const pluginPath = dynsecPluginPath()
        let dynsec: { pluginPath: string; configFile: string } | undefined
        if (pluginPath) {
          dynsec = { pluginPath, configFile: join(dir, 'dynamic-security.json') }
          if (!existsSync(dynsec.configFile))
            writeFileSync(dynsec.configFile, initialDynsecConfig(bridgeAccount), { mode: 0o600 })
          Object.assign(brokerEnv, {
            VIGIL_MQTT_DYNSEC: 'true',
            VIGIL_MQTT_USERNAME: bridgeAccount.username,
            VIGIL_MQTT_PASSWORD: bridgeAccount.password,
          })
        }
        writeFileSync(
          file,
          mosquittoConfig({
            port: mqttPort,
            dataDir: dir,
            dynsec,
            tls: tls ? { ...tls.pem('mosquitto'), caFile: tls.ca } : undefined,
          }),
        )
        broker = new Supervised({ name: 'mosquitto', command: binary, args: ['-c', file], logDir }, say)
        state = dynsec
          ? 'started mosquitto with per-device accounts (add one: vigil devices add ID)'
          : `started mosquitto WITHOUT device accounts: ${'mosquitto_dynamic_security.so'} is missing (${file})`
      } else {
        // No mosquitto: the embedded broker (MQTT 3.1.1, queues in memory) keeps a laptop going; its
        // hooks check devices against the registry.
        const args = entryOf('services/bridge/embedded-broker')
        Object.assign(brokerEnv, {
          VIGIL_MQTT_USERNAME: bridgeAccount.username,
          VIGIL_MQTT_PASSWORD: bridgeAccount.password,
        })
        broker = new Supervised(
          {
            name: 'embedded-broker',
            command: process.execPath,
            args,
            logDir,
            env: {
              ...process.env,
              ...brokerEnv,
              VIGIL_NATS_URL: busUrl,
              VIGIL_MQTT_AUTH: 'registry',
              VIGIL_MQTT_PORT: String(ports.mqtt),
              ...busUser('bridge'),
            },
          },
          say,
        )
        state = 'started the embedded broker (aedes: MQTT 3.1.1, in memory; install mosquitto for production)'
      }
      broker.start()
      children.push(broker)
      await waitForPort(mqttPort, { timeoutMs: 15_000, alive: () => broker.running })
      rows.push({ component: 'mqtt', address: brokerUrl, state })
    } else {
      rows.push({ component: 'mqtt', address: mqttUrl, state: 'configured (VIGIL_MQTT_URL)' })
    }

    rows.push({
      component: 'clickhouse',
      address: clickhouseUrl ?? `embedded in ${join(dataDir, 'clickhouse')}`,
      state: clickhouseUrl ? 'configured (VIGIL_CLICKHOUSE_URL)' : 'opened by the store/query process',
    })

    const starting: { row: Row; child: Supervised }[] = []
    for (const service of SERVICES) {
      if ('serverOnly' in service && service.serverOnly && !clickhouseUrl) {
        rows.push({ component: service.name, address: '-', state: 'runs inside query (embedded ClickHouse)' })
        continue
      }
      const entry = serviceEntry(service.name)
      if (!entry) {
        rows.push({
          component: service.name,
          address: '-',
          state: `not built yet (issue "${service.issue}")`,
        })
        continue
      }
      const port = ports[service.name]
      await ensurePortFree(port, '127.0.0.1', service.name, `stop what uses it, ${moveAll}`)
      const child = new Supervised(
        {
          name: service.name,
          command: process.execPath,
          args: entry,
          env: {
            ...process.env,
            ...brokerEnv,
            ...wiring,
            ...authEnv,
            ...serviceTls(service.name),
            ...tokenEnv[service.name as TokenHolder],
            ...busUser(service.name),
            VIGIL_PORT: String(port),
          },
          logDir,
        },
        say,
      )
      child.start()
      children.push(child)
      const row = { component: service.name, address: `${scheme}://127.0.0.1:${port}`, state: 'starting' }
      rows.push(row)
      starting.push({ row, child })
    }
    // One table, once every service answers /readyz (or is given up on).
    if (starting.length > 0)
      say(`waiting for ${starting.map((s) => s.row.component).join(', ')} to be ready …`)
    await Promise.all(
      starting.map(async ({ row, child }) => {
        row.state = (await waitReady(`${row.address}/readyz`, 90_000, tls?.ca))
          ? 'ready'
          : `not ready after 90 s (see ${child.logFile})`
      }),
    )
    const dashboardBuilt = existsSync(join(repoRoot, 'dist', 'dashboard', 'index.html'))
    rows.push({
      component: 'dashboard',
      address: `${scheme}://127.0.0.1:${ports.query}/`,
      state: dashboardBuilt
        ? `served by query — open it in a browser${tls ? ` that trusts ${tls.ca}` : ''}`
        : 'not built: run "npm run build" (npm start does)',
    })
    if (flags.simulate > 0) {
      // The simulated fleet: its devices register themselves and publish over MQTT.
      const sim = new Supervised(
        {
          name: 'simulator',
          command: process.execPath,
          args: [...entryOf('services/cli/main'), 'simulate', '--devices', String(flags.simulate)],
          env: {
            ...process.env,
            ...wiring,
            ...tokenEnv.simulator,
            ...(tls ? { VIGIL_TLS_CA: tls.ca, VIGIL_MQTT_CA: tls.ca } : {}),
          },
          logDir,
        },
        say,
      )
      sim.start()
      children.push(sim)
      rows.push({
        component: 'simulator',
        address: '-',
        state: `${flags.simulate} devices, a reading per second each, anomalies now and then (${sim.logFile})`,
      })
    }

    say('')
    printTable(
      ['COMPONENT', 'ADDRESS', 'STATE'],
      rows.map((r) => [r.component, r.address, r.state]),
      say,
    )
    say('')
    if (issuer)
      say(
        `Sign in to the dashboard at ${issuer.signInUrl} (development issuer: any name, the role you pick). ` +
          'The CLI on this machine signs its own calls with its key in the data folder.',
      )
    say(
      tls
        ? `TLS is on everywhere (certificates in ${certDir}); the CLI needs VIGIL_QUERY_ADDR=${wiring.VIGIL_QUERY_ADDR} VIGIL_INFERENCE_ADDR=${wiring.VIGIL_INFERENCE_ADDR} VIGIL_TLS_CA=${tls.ca} VIGIL_NATS_URL=${busUrl} VIGIL_NATS_CA=${tls.ca}.`
        : 'TLS is off: "vigil up --tls" (npm start -- --tls) runs every listener with TLS, certificates from a development CA.',
    )
    say(`Logs: ${logDir}. Data: ${dataDir}. Press Ctrl-C to stop.`)
    await new Promise<void>((resolveStop) => {
      process.once('SIGINT', resolveStop)
      process.once('SIGTERM', resolveStop)
    })
    say('stopping…')
    return 0
  } catch (err) {
    if (err instanceof MissingPrerequisite) {
      process.stderr.write(`vigil up: ${err.message}\n  fix: ${err.fix}\n`)
      return 1
    }
    process.stderr.write(`vigil up: ${(err as Error).message}\n`)
    return 1
  } finally {
    clearInterval(refreshTokens)
    for (const child of [...children].reverse()) await child.stop()
    await issuer?.close()
  }
}

/** The processes `vigil up` hands a token: ingest calls Infer, the simulator registers devices. */
type TokenHolder = 'ingest' | 'simulator'
const TOKEN_GRANTS: Record<TokenHolder, TokenRequest['roles']> = {
  ingest: [SERVICE_ROLE],
  simulator: ['operator'],
}

/** Mints a day-long token per holder into `dir/<holder>.jwt` (mode 600, replaced atomically). */
async function writeServiceTokens(
  key: DevKey,
  dir: string,
): Promise<Record<TokenHolder, Record<string, string>>> {
  mkdirSync(dir, { recursive: true, mode: 0o700 })
  const env = {} as Record<TokenHolder, Record<string, string>>
  for (const [holder, roles] of Object.entries(TOKEN_GRANTS) as [TokenHolder, TokenRequest['roles']][]) {
    const file = join(dir, `${holder}.jwt`)
    const token = await key.mint({ subject: `service:${holder}`, roles, ttlSeconds: 86_400 })
    writeFileSync(`${file}.tmp`, token, { mode: 0o600 })
    renameSync(`${file}.tmp`, file)
    env[holder] = { VIGIL_TOKEN_FILE: file }
  }
  return env
}

/** The bridge's broker account: made once, kept (mode 600) in the broker's data folder. */
function brokerAccount(dir: string): { username: string; password: string } {
  mkdirSync(dir, { recursive: true })
  const file = join(dir, 'bridge-account.json')
  if (existsSync(file))
    return JSON.parse(readFileSync(file, 'utf8')) as { username: string; password: string }
  const account = { username: 'vigil-bridge', password: randomBytes(24).toString('base64url') }
  writeFileSync(file, `${JSON.stringify(account)}\n`, { mode: 0o600 })
  return account
}

/** Node arguments to run a module (path without extension): compiled JS when built, else TypeScript through tsx. */
function entryOf(module: string): string[] {
  const built = join(repoRoot, 'dist', `${module}.js`)
  if (import.meta.url.includes('/dist/') && existsSync(built)) return [built]
  return ['--import', 'tsx', join(repoRoot, `${module}.ts`)]
}

/** How to run a service, or undefined when it is not built yet. */
function serviceEntry(name: string): string[] | undefined {
  return existsSync(join(repoRoot, 'services', name, 'main.ts'))
    ? entryOf(`services/${name}/main`)
    : undefined
}

/** Polls a readiness URL until it answers 200 or the time is up; https URLs are checked against `caFile`. */
async function waitReady(url: string, timeoutMs: number, caFile?: string): Promise<boolean> {
  const ca = caFile ? readFileSync(caFile) : undefined
  const status = (): Promise<number | undefined> =>
    new Promise((resolveStatus) => {
      const req = (url.startsWith('https:') ? https : http).get(url, { ca, timeout: 5_000 }, (res) => {
        res.resume()
        resolveStatus(res.statusCode)
      })
      req.on('error', () => resolveStatus(undefined))
      req.on('timeout', () => req.destroy())
    })
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if ((await status()) === 200) return true
    await new Promise((r) => setTimeout(r, 250))
  }
  return false
}

function parseFlags(argv: string[]): { simulate: number; portOffset: number; auth: boolean; tls: boolean } {
  let values: {
    simulate?: string
    'no-simulate'?: boolean
    'port-offset'?: string
    'no-auth'?: boolean
    tls?: boolean
  }
  try {
    ;({ values } = parseArgs({
      args: argv,
      options: {
        simulate: { type: 'string' },
        'no-simulate': { type: 'boolean' },
        'port-offset': { type: 'string' },
        'no-auth': { type: 'boolean' },
        tls: { type: 'boolean' },
      },
    }))
  } catch (err) {
    throw new MissingPrerequisite((err as Error).message, 'see vigil help')
  }
  const simulate = values['no-simulate'] ? 0 : Number(values.simulate ?? 50)
  if (!Number.isInteger(simulate) || simulate < 0)
    throw new MissingPrerequisite('--simulate wants a device count', 'e.g. --simulate 50')
  const portOffset = Number(values['port-offset'] ?? 0)
  const highest = Math.max(...Object.values(DEFAULT_PORTS))
  if (!Number.isInteger(portOffset) || portOffset < 0 || highest + portOffset > 65535)
    throw new MissingPrerequisite(
      `--port-offset wants a whole number from 0 to ${65535 - highest}`,
      'e.g. --port-offset 10000 (query on 18080, MQTT on 11883, …)',
    )
  return { simulate, portOffset, auth: !values['no-auth'], tls: Boolean(values.tls) }
}
