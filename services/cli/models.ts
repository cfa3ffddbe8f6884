// `vigil models list|show|promote|rollback`: the model registry through InferenceService.
import { parseArgs } from 'node:util'
import { timestampDate } from '@bufbuild/protobuf/wkt'
import { ConnectError } from '@connectrpc/connect'
import { InferenceService, type Model, ModelScope } from '../../gen/vigil/inference/v1/inference_pb.js'
import { DEFAULT_PORTS, EnvReader } from '../common/config.js'
import { cliClient, serviceAddress } from './addresses.js'
import { printTable } from './table.js'

export const MODELS_HELP = `vigil models — the model registry

Usage:
  vigil models list [--name NAME]                  every model version, with its aliases
  vigil models show NAME [VERSION]                 one version (default: production) in full
  vigil models promote NAME VERSION [--alias A]    point production (or canary) at VERSION
  vigil models rollback NAME [--alias A]           point the alias back where it was before

Environment: VIGIL_INFERENCE_ADDR (default http://127.0.0.1:${DEFAULT_PORTS.inference}).
`

export async function models(argv: string[]): Promise<number> {
  const { values: flags, positionals } = parseArgs({
    args: argv,
    options: { name: { type: 'string' }, alias: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  })
  const [sub, name, version] = positionals
  if (flags.help || !sub) {
    process.stdout.write(MODELS_HELP)
    return flags.help ? 0 : 2
  }
  const r = new EnvReader()
  const addr = serviceAddress(r, 'inference')
  const client = cliClient(r, InferenceService, addr)
  r.done()
  const out = (line: string) => process.stdout.write(`${line}\n`)
  try {
    switch (sub) {
      case 'list': {
        const res = await client.listModels({ name: flags.name ?? '' })
        if (res.bootstrap && res.bootstrap.state !== 'done') out(`bootstrap: ${res.bootstrap.message}`)
        if (res.models.length === 0) {
          out('no models yet')
          return 0
        }
        printTable(
          ['NAME', 'VERSION', 'ALIASES', 'SCOPE', 'FEATURES', 'ROWS', 'SOURCE', 'CREATED'],
          res.models.map((m) => [
            m.ref?.name ?? '',
            String(m.ref?.version ?? ''),
            m.aliases.join(',') || '-',
            scopeOf(m),
            String(m.features.length),
            String(m.trainingRows),
            m.source,
            m.createdAt ? timestampDate(m.createdAt).toISOString() : '',
          ]),
          out,
        )
        return 0
      }
      case 'show': {
        if (!name) return usage('show needs a model name')
        const res = await client.getModel({ name, version: versionOf(version) })
        if (res.model) show(res.model, out)
        return 0
      }
      case 'promote': {
        if (!name || !version) return usage('promote needs a model name and a version')
        const res = await client.promoteModel({
          name,
          version: versionOf(version),
          alias: flags.alias ?? 'production',
        })
        out(
          `${flags.alias ?? 'production'} of ${name} now v${res.model?.ref?.version} (was ${res.previousVersion ? `v${res.previousVersion}` : 'unset'})`,
        )
        return 0
      }
      case 'rollback': {
        if (!name) return usage('rollback needs a model name')
        const res = await client.rollbackModel({ name, alias: flags.alias ?? 'production' })
        out(
          `${flags.alias ?? 'production'} of ${name} back to v${res.model?.ref?.version} (was v${res.previousVersion})`,
        )
        return 0
      }
      default:
        return usage(`unknown subcommand "${sub}"`)
    }
  } catch (err) {
    const e = ConnectError.from(err)
    process.stderr.write(`vigil models ${sub}: ${e.rawMessage} (${codeText(e)})\n`)
    return 1
  }
}

function usage(problem: string): number {
  process.stderr.write(`vigil models: ${problem}\n\n${MODELS_HELP}`)
  return 2
}

function versionOf(text: string | undefined): number {
  const n = Number(text ?? 0)
  if (!Number.isInteger(n) || n < 0) throw new ConnectError(`"${text}" is not a version number`, 3)
  return n
}

function codeText(e: ConnectError): string {
  return e.code === 14 ? 'is the inference service running? set VIGIL_INFERENCE_ADDR' : `code ${e.code}`
}

function scopeOf(m: Model): string {
  if (m.scope === ModelScope.DEVICE) return `device ${m.scopeKey}`
  if (m.scope === ModelScope.SITE) return `site ${m.scopeKey}`
  return 'fleet'
}

function show(m: Model, out: (line: string) => void): void {
  out(`${m.ref?.name} v${m.ref?.version}${m.aliases.length ? ` (${m.aliases.join(', ')})` : ''}`)
  out(`  scope        ${scopeOf(m)}`)
  out(`  features     ${m.features.join(', ')}`)
  out(`  components   ${m.components}`)
  out(`  limits       Q ${m.speLimit.toPrecision(5)}, T² ${m.t2Limit.toPrecision(5)} at ${m.confidence}`)
  out(`  trained on   ${m.trainingRows} rows from ${m.source}`)
  if (m.trainingStart && m.trainingEnd)
    out(
      `  window       ${timestampDate(m.trainingStart).toISOString()} .. ${timestampDate(m.trainingEnd).toISOString()}`,
    )
  out(`  size         ${m.sizeBytes} bytes`)
  for (const [k, v] of Object.entries(m.metrics).sort()) out(`  ${k.padEnd(12)} ${Number(v.toPrecision(6))}`)
}
