// `vigil train`: fits a model from stored telemetry (read through QueryService.ExportReadings, so
// it works with embedded ClickHouse too) or from a JSON Lines file of device payloads, stores it in
// the registry as the next version and, with --promote, points an alias at it through
// InferenceService.PromoteModel (which loads and checks it first).
import { createReadStream, writeFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { timestampFromMs, timestampMs } from '@bufbuild/protobuf/wkt'
import type { Client } from '@connectrpc/connect'
import { InferenceService } from '../../gen/vigil/inference/v1/inference_pb.js'
import { QueryService } from '../../gen/vigil/query/v1/query_pb.js'
import type { Reading } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { cliBusCredentials } from '../common/bus-users.js'
import { DEFAULT_PORTS, EnvReader } from '../common/config.js'
import { createLogger } from '../common/log.js'
import { connectNats } from '../common/nats.js'
import { decodeReading } from '../common/readings.js'
import { normalizeSensorName, validateDeviceId } from '../common/validation.js'
import { buildOnnx } from '../inference/model/onnx.js'
import type { ModelScopeName } from '../inference/model/spec.js'
import { TrainingError, trainingSet, trainModel } from '../inference/model/train.js'
import { isAlias, ModelRegistry } from '../inference/registry.js'
import { cliClient, serviceAddress } from './addresses.js'
import { Progress } from './progress.js'

export const TRAIN_HELP = `vigil train — fit an anomaly model and store it in the registry

Usage: vigil train [--device ID | --site SITE] [data] [options]

Scope (the most specific model that exists serves a device):
  --device ID          a model for one device
  --site SITE          a model for the devices of one site
  (neither)            a model for the whole fleet

Data (normal operation; a few hundred rows are enough for a device):
  --since DURATION     stored telemetry from this long ago until now (default 24h; e.g. 90m, 7d)
  --from TIME --to TIME  stored telemetry in a window (ISO 8601)
  --file PATH          a JSON Lines file of device payloads instead of stored telemetry
  --limit N            read at most N readings (default 100000)

Model:
  --variance SHARE     variance the kept components explain (default 0.9)
  --confidence P       confidence of the control limits (default 0.999)

Output:
  --promote            point the production alias at the new version
  --alias canary       with --promote: point canary at it instead
  --out PATH           also write the ONNX file here
  --no-store           do not store it in the registry (with --out)

Environment: VIGIL_QUERY_ADDR, VIGIL_INFERENCE_ADDR, VIGIL_NATS_URL (defaults: this machine).
`

interface Row {
  sensors: Record<string, number>
  tsMs: number
}

export async function train(argv: string[]): Promise<number> {
  const { values: flags } = parseArgs({
    args: argv,
    options: {
      device: { type: 'string' },
      site: { type: 'string' },
      since: { type: 'string' },
      from: { type: 'string' },
      to: { type: 'string' },
      file: { type: 'string' },
      limit: { type: 'string' },
      variance: { type: 'string' },
      confidence: { type: 'string' },
      promote: { type: 'boolean' },
      alias: { type: 'string' },
      out: { type: 'string' },
      'no-store': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: false,
  })
  if (flags.help) {
    process.stdout.write(TRAIN_HELP)
    return 0
  }
  const problems: string[] = []
  if (flags.device && flags.site) problems.push('--device and --site: give one scope, not both')
  if (flags.device && validateDeviceId(flags.device).length > 0)
    problems.push(`--device: "${flags.device}" is not a device id`)
  const scope: ModelScopeName = flags.device ? 'device' : flags.site ? 'site' : 'fleet'
  const limit = numberFlag(flags.limit, 100_000, '--limit', problems, 1, 1_000_000)
  const variance = numberFlag(flags.variance, 0.9, '--variance', problems, 0.5, 0.999)
  const confidence = numberFlag(flags.confidence, 0.999, '--confidence', problems, 0.9, 0.99999)
  const promote = flags.promote ? (flags.alias ?? 'production') : undefined
  if (promote && !isAlias(promote)) problems.push(`--alias: "${promote}" is not production or canary`)
  if (flags.alias && !flags.promote) problems.push('--alias goes with --promote')
  if (flags['no-store'] && !flags.out) problems.push('--no-store needs --out (or the model would be lost)')
  if (flags['no-store'] && promote) problems.push('--promote needs the model stored (drop --no-store)')
  const window = flags.file ? undefined : timeWindow(flags, problems)
  const r = new EnvReader()
  const queryAddr = serviceAddress(r, 'query')
  const inferenceAddr = serviceAddress(r, 'inference')
  const natsUrl = r.url('VIGIL_NATS_URL', `nats://127.0.0.1:${DEFAULT_PORTS.nats}`, ['nats', 'tls']) as string
  const dataDir = resolve(r.string('VIGIL_DATA_DIR', '.vigil'))
  const natsCa = r.file('VIGIL_NATS_CA')
  const query = cliClient(r, QueryService, queryAddr)
  const inference = cliClient(r, InferenceService, inferenceAddr)
  r.done()
  if (problems.length > 0) {
    process.stderr.write(`vigil train: ${problems.join('\n  ')}\n\n${TRAIN_HELP}`)
    return 2
  }

  const progress = new Progress()
  const key = flags.device ?? flags.site ?? ''
  const what = scope === 'fleet' ? 'the fleet' : `${scope} ${key}`
  let rows: Row[]
  let source: string
  if (flags.file) {
    source = `file:${flags.file}`
    rows = await readFile(flags.file, flags, limit, progress)
  } else {
    source = 'clickhouse'
    rows = await readStored(
      query,
      queryAddr,
      flags,
      window as { startMs: number; endMs: number },
      limit,
      progress,
    )
  }
  progress.done(`${rows.length.toLocaleString('en')} readings of ${what}`)
  if (rows.length === 0) {
    process.stderr.write(
      flags.file
        ? `vigil train: ${flags.file} holds no usable readings for ${what}\n`
        : `vigil train: no stored readings of ${what} in that window; widen it with --since or --from/--to\n`,
    )
    return 1
  }

  progress.step('training')
  let spec: ReturnType<typeof trainModel>
  try {
    spec = trainModel(trainingSet(rows, source), {
      scope,
      scopeKey: key,
      varianceToKeep: variance,
      confidence,
    })
  } catch (err) {
    if (err instanceof TrainingError) {
      progress.done('')
      process.stderr.write(`vigil train: ${err.message}\n`)
      return 1
    }
    throw err
  }
  progress.done(
    `trained ${spec.name}: ${spec.features.length} features (${spec.features.join(', ')}), ` +
      `${spec.eigenvalues.length} components explaining ${pct(spec.metrics.explained_variance)} of the variance, ` +
      `${spec.training.rows} rows (${spec.training.trimmedRows} outliers trimmed), ` +
      `limits Q ${spec.speLimit.toPrecision(4)} T² ${spec.t2Limit.toPrecision(4)}, ` +
      `training alarm rate ${pct(spec.metrics.training_alarm_rate)}`,
  )
  const file = buildOnnx(spec)
  if (flags.out) {
    writeFileSync(flags.out, file)
    progress.done(`wrote ${flags.out} (${file.length} bytes)`)
  }
  if (flags['no-store']) return 0

  const log = createLogger({ service: 'cli', logLevel: 'warn' })
  const nc = await connectNats({ service: 'cli', natsUrl, natsCa, ...cliBusCredentials(dataDir) }, log, {
    waitMs: 5_000,
  })
  try {
    const stored = await (await ModelRegistry.open(nc)).store(file)
    progress.done(
      `stored ${stored.spec.name} v${stored.spec.version} in the registry (${stored.sizeBytes} bytes)`,
    )
    if (promote) {
      const res = await inference.promoteModel({
        name: stored.spec.name,
        version: stored.spec.version,
        alias: promote,
      })
      progress.done(
        `${promote} of ${stored.spec.name} now v${stored.spec.version}` +
          (res.previousVersion ? ` (was v${res.previousVersion})` : ''),
      )
    } else {
      progress.done(`promote it with: vigil models promote ${stored.spec.name} ${stored.spec.version}`)
    }
  } finally {
    await nc.drain()
  }
  return 0
}

function numberFlag(
  raw: string | undefined,
  fallback: number,
  name: string,
  problems: string[],
  min: number,
  max: number,
): number {
  if (raw === undefined) return fallback
  const n = Number(raw)
  if (!Number.isFinite(n) || n < min || n > max) {
    problems.push(`${name}: must be a number from ${min} to ${max}, got "${raw}"`)
    return fallback
  }
  return n
}

/** `250ms`, `45s`, `90m`, `36h`, `7d` in milliseconds, or undefined. */
export function parseDuration(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(text.trim())
  if (!m) return undefined
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[
    m[2] as 'ms' | 's' | 'm' | 'h' | 'd'
  ]
  return Number(m[1]) * unit
}

function timeWindow(
  flags: { since?: string; from?: string; to?: string },
  problems: string[],
): { startMs: number; endMs: number } | undefined {
  const endMs = flags.to ? Date.parse(flags.to) : Date.now()
  if (Number.isNaN(endMs)) problems.push(`--to: "${flags.to}" is not a time (ISO 8601)`)
  if (flags.from && flags.since) problems.push('--from and --since: give one')
  let startMs: number
  if (flags.from) {
    startMs = Date.parse(flags.from)
    if (Number.isNaN(startMs)) problems.push(`--from: "${flags.from}" is not a time (ISO 8601)`)
  } else {
    const span = parseDuration(flags.since ?? '24h')
    if (span === undefined) {
      problems.push(`--since: "${flags.since}" is not a duration like 90m, 36h or 7d`)
      return undefined
    }
    startMs = endMs - span
  }
  if (startMs >= endMs) problems.push('the window starts after it ends')
  return { startMs, endMs }
}

async function readStored(
  client: Client<typeof QueryService>,
  addr: string,
  flags: { device?: string; site?: string },
  window: { startMs: number; endMs: number },
  limit: number,
  progress: Progress,
): Promise<Row[]> {
  const rows: Row[] = []
  progress.step(`reading stored telemetry from ${addr}`)
  let truncated = false
  for await (const chunk of client.exportReadings({
    deviceId: flags.device ?? '',
    site: flags.site ?? '',
    start: timestampFromMs(window.startMs),
    end: timestampFromMs(window.endMs),
    limit,
  })) {
    for (const r of chunk.readings) rows.push(row(r))
    truncated ||= chunk.truncated
    progress.count(rows.length, 'readings')
  }
  if (truncated) progress.done(`stopped at --limit ${limit}; the window holds more`)
  return rows
}

async function readFile(
  path: string,
  flags: { device?: string; site?: string },
  limit: number,
  progress: Progress,
): Promise<Row[]> {
  const rows: Row[] = []
  const bad: string[] = []
  let line = 0
  let badCount = 0
  progress.step(`reading ${path}`)
  const input = createInterface({ input: createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY })
  for await (const text of input) {
    line++
    if (text.trim() === '') continue
    const decoded = decodeReading(Buffer.from(text), 'application/json')
    if (!decoded.ok) {
      badCount++
      if (bad.length < 5) bad.push(`line ${line}: ${decoded.refusal.detail}`)
      continue
    }
    const r = decoded.reading
    if (flags.device && r.deviceId !== flags.device) continue
    if (flags.site && r.meta.site !== flags.site) continue
    rows.push(row(r, line))
    if (rows.length % 1000 === 0) progress.count(rows.length, 'readings')
    if (rows.length >= limit) break
  }
  input.close()
  if (badCount > 0)
    progress.done(`skipped ${badCount} line(s) that are not readings:\n    ${bad.join('\n    ')}`)
  return rows
}

/** A training row; sensor names as Vigil stores them (the names the model's features get). */
function row(r: Reading, line = 0): Row {
  const sensors: Record<string, number> = {}
  for (const [name, value] of Object.entries(r.sensors)) sensors[normalizeSensorName(name)] = value
  return { sensors, tsMs: r.ts ? timestampMs(r.ts) : line }
}

function pct(x: number | undefined): string {
  return `${((x ?? 0) * 100).toFixed(1)}%`
}
