// `vigil simulate`: a fleet of devices over MQTT for demos, tests and benchmarks. Each device has
// its own registry account (registered through the DeviceService the first time, its password kept
// in the simulator's credentials file), publishes readings of the synthetic fleet model (correlated
// sensors, per-device baselines) with anomalies injected now and then (labelled in the reading's
// meta as `sim_anomaly`), and answers commands: `set-interval {seconds}`, `reboot`,
// `set-threshold {value}`; anything else is refused.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { type Client, Code, ConnectError } from '@connectrpc/connect'
import mqtt, { type MqttClient } from 'mqtt'
import { DeviceService } from '../../gen/vigil/device/v1/device_pb.js'
import { DEFAULT_PORTS, EnvReader } from '../common/config.js'
import {
  ANOMALY_KINDS,
  anomalousReading,
  normalReading,
  Rng,
  type SyntheticDevice,
  syntheticFleet,
} from '../inference/model/synthetic.js'
import { cliClient, serviceAddress } from './addresses.js'
import { parseDuration } from './train.js'

export const SIMULATE_HELP = `vigil simulate — a fleet of simulated devices over MQTT

Usage: vigil simulate [--devices N] [--interval 1s] [--anomaly-rate 0.01] [--sites 4] [--seed 1]
                      [--prefix sim] [--for DURATION]

Each device registers itself once (DeviceService at VIGIL_QUERY_ADDR; passwords kept in
VIGIL_DATA_DIR/simulator/credentials.json), connects to VIGIL_MQTT_URL with its own account,
publishes a reading every interval with anomalies injected at the given rate, and answers the
commands set-interval {"seconds"}, reboot and set-threshold {"value"}.
`

interface SimDevice {
  spec: SyntheticDevice
  client?: MqttClient
  intervalMs: number
  threshold: number
  rebootingUntil: number
  seq: number
  timer?: NodeJS.Timeout
}

export async function simulate(argv: string[]): Promise<number> {
  const { values: flags } = parseArgs({
    args: argv,
    options: {
      devices: { type: 'string' },
      interval: { type: 'string' },
      'anomaly-rate': { type: 'string' },
      sites: { type: 'string' },
      seed: { type: 'string' },
      prefix: { type: 'string' },
      for: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (flags.help) {
    process.stdout.write(SIMULATE_HELP)
    return 0
  }
  const count = Number(flags.devices ?? 50)
  const intervalMs = parseDuration(flags.interval ?? '1s')
  const rate = Number(flags['anomaly-rate'] ?? 0.01)
  const forMs = flags.for ? parseDuration(flags.for) : undefined
  const problems: string[] = []
  if (!Number.isInteger(count) || count < 1 || count > 100_000) problems.push('--devices: 1 to 100000')
  if (intervalMs === undefined || intervalMs < 10)
    problems.push('--interval: a duration of at least 10ms, like 1s')
  if (!(rate >= 0 && rate <= 1)) problems.push('--anomaly-rate: from 0 to 1')
  if (flags.for && forMs === undefined) problems.push('--for: a duration like 90s or 10m')
  const r = new EnvReader()
  const mqttUrl = r.url('VIGIL_MQTT_URL', `mqtt://127.0.0.1:${DEFAULT_PORTS.mqtt}`, [
    'mqtt',
    'mqtts',
    'tcp',
    'ssl',
  ]) as string
  const queryAddr = serviceAddress(r, 'query')
  const dataDir = resolve(r.string('VIGIL_DATA_DIR', '.vigil'))
  const registry = cliClient(r, DeviceService, queryAddr)
  // mqtts:// with a private CA (vigil up --tls): the CA the broker's certificate is checked against.
  const mqttCa = r.file('VIGIL_MQTT_CA')
  r.done()
  if (problems.length > 0) {
    process.stderr.write(`vigil simulate: ${problems.join('; ')}\n\n${SIMULATE_HELP}`)
    return 2
  }
  const prefix = flags.prefix ?? 'sim'
  const rng = new Rng(Number(flags.seed ?? 1))
  const fleet: SimDevice[] = syntheticFleet(count, Number(flags.seed ?? 1), Number(flags.sites ?? 4)).map(
    (spec) => ({
      spec: { ...spec, id: spec.id.replace(/^dev/, prefix) },
      intervalMs: intervalMs as number,
      threshold: 0,
      rebootingUntil: 0,
      seq: 0,
    }),
  )
  const credentials = await ensureAccounts(fleet, registry, join(dataDir, 'simulator', 'credentials.json'))
  let published = 0
  let injected = 0
  let commands = 0
  const stopAt = forMs ? Date.now() + forMs : Number.POSITIVE_INFINITY
  await Promise.all(
    fleet.map(async (d) => {
      const password = credentials[d.spec.id]
      d.client = await mqtt.connectAsync(mqttUrl, {
        clientId: d.spec.id,
        username: password ? d.spec.id : undefined,
        password,
        protocolVersion: 5,
        reconnectPeriod: 2_000,
        ...(mqttCa ? { ca: mqttCa } : {}),
      })
      d.client.on('message', (_topic, payload) => {
        commands++
        answer(d, payload)
      })
      await d.client.subscribeAsync(`devices/${d.spec.id}/cmd`, { qos: 1 })
      const tick = () => {
        if (Date.now() >= stopAt) return
        if (Date.now() >= d.rebootingUntil) {
          const anomaly = rng.next() < rate
          const row = anomaly
            ? anomalousReading(d.spec, ANOMALY_KINDS[Math.floor(rng.next() * ANOMALY_KINDS.length)]!, rng)
            : { sensors: normalReading(d.spec, rng) }
          d.seq++
          const meta: Record<string, string> = { site: d.spec.site, fw: '1.4.2' }
          if (row.anomaly) {
            meta.sim_anomaly = `${row.anomaly.kind}:${row.anomaly.feature}`
            injected++
          }
          const body = JSON.stringify({
            ts: new Date().toISOString(),
            sensors: row.sensors,
            meta,
            seq: d.seq,
          })
          d.client?.publish(`devices/${d.spec.id}/telemetry`, body, { qos: 1 }, (err) => {
            if (!err) published++
          })
        }
        d.timer = setTimeout(tick, d.intervalMs)
      }
      // Spread the first readings over one interval.
      d.timer = setTimeout(tick, Math.floor(rng.next() * d.intervalMs))
    }),
  )
  process.stdout.write(
    `simulating ${count} devices (${prefix}-0001…) on ${mqttUrl}, one reading per ${intervalMs} ms each, anomalies at ${rate}\n`,
  )
  const report = setInterval(
    () =>
      process.stdout.write(
        `simulator: ${published} readings published, ${injected} anomalies injected, ${commands} commands\n`,
      ),
    10_000,
  )
  await new Promise<void>((resolveStop) => {
    process.once('SIGINT', resolveStop)
    process.once('SIGTERM', resolveStop)
    if (forMs !== undefined) setTimeout(resolveStop, forMs + 500)
  })
  clearInterval(report)
  for (const d of fleet) clearTimeout(d.timer)
  await Promise.all(fleet.map((d) => d.client?.endAsync()))
  process.stdout.write(`simulator stopped: ${published} readings published, ${injected} anomalies injected\n`)
  return 0
}

/** A command: carried out (after a moment, like a device would) and answered on cmd/ack. */
function answer(d: SimDevice, payload: Buffer): void {
  let cmd: { commandId?: string; name?: string; payload?: Record<string, unknown> }
  try {
    cmd = JSON.parse(payload.toString())
  } catch {
    return
  }
  const reply = (body: object) =>
    d.client?.publish(`devices/${d.spec.id}/cmd/ack`, JSON.stringify({ commandId: cmd.commandId, ...body }), {
      qos: 1,
    })
  switch (cmd.name) {
    case 'set-interval': {
      const seconds = Number(cmd.payload?.seconds)
      if (!(seconds >= 0.01 && seconds <= 3600))
        return void reply({ ok: false, error: 'seconds must be from 0.01 to 3600' })
      d.intervalMs = seconds * 1000
      return void reply({ ok: true, result: { intervalSeconds: seconds } })
    }
    case 'reboot':
      d.rebootingUntil = Date.now() + 2_000
      return void reply({ ok: true, result: { rebootingForSeconds: 2 } })
    case 'set-threshold': {
      const value = Number(cmd.payload?.value)
      if (!Number.isFinite(value)) return void reply({ ok: false, error: 'value must be a number' })
      d.threshold = value
      return void reply({ ok: true, result: { threshold: value } })
    }
    default:
      return void reply({ ok: false, error: `unknown command "${cmd.name}"` })
  }
}

/**
 * The devices' passwords: from the credentials file, else registered now. When the registry has no
 * DeviceService (or the broker takes anonymous clients) the devices connect without one.
 */
async function ensureAccounts(
  fleet: SimDevice[],
  client: Client<typeof DeviceService>,
  file: string,
): Promise<Record<string, string>> {
  const known: Record<string, string> = existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {}
  let added = 0
  for (const d of fleet) {
    if (known[d.spec.id]) continue
    try {
      const res = await client.registerDevice({
        deviceId: d.spec.id,
        site: d.spec.site,
        labels: { simulated: 'true' },
      })
      if (res.credentials?.password) {
        known[d.spec.id] = res.credentials.password
        added++
      }
    } catch (err) {
      const e = ConnectError.from(err)
      if (e.code === Code.AlreadyExists)
        process.stderr.write(
          `simulator: ${d.spec.id} is registered but its password is not in ${file}; it connects without one\n`,
        )
      else if (e.code === Code.Unavailable || e.code === Code.Unimplemented) {
        process.stderr.write(
          `simulator: cannot register devices (${e.rawMessage}); connecting without accounts\n`,
        )
        break
      } else throw err
    }
  }
  if (added > 0) {
    mkdirSync(dirname(file), { recursive: true })
    writeFileSync(file, `${JSON.stringify(known, null, 1)}\n`, { mode: 0o600 })
    process.stdout.write(`simulator: registered ${added} devices (passwords in ${file})\n`)
  }
  return known
}
