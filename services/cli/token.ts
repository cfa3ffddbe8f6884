// `vigil token`: an access token from the development issuer of `vigil up` (its key in the data
// folder), for curl, grpcurl, scripts and programs that publish over IngestService.
import { resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { type Grant, ROLES, SERVICE_ROLE } from '../common/auth.js'
import { EnvReader } from '../common/config.js'
import { DevKey } from '../common/dev-issuer.js'

export const TOKEN_HELP = `vigil token — an access token from the development issuer of "vigil up"

Usage: vigil token [--role ROLE]... [--subject NAME] [--ttl DURATION]

Prints a token signed with the development issuer's key in VIGIL_DATA_DIR (made by "vigil up"),
for "Authorization: Bearer <token>". Roles: viewer, operator, admin (users) and service (programs
that publish readings over IngestService; services are not users). Default: --role viewer,
--subject the user running it, --ttl 1h (at most 30d).

Development only: with VIGIL_AUTH_JWKS_URL your OIDC provider issues the tokens.
`

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 }

export async function token(argv: string[]): Promise<number> {
  const { values: flags } = parseArgs({
    args: argv,
    options: {
      role: { type: 'string', multiple: true },
      subject: { type: 'string' },
      ttl: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  })
  if (flags.help) {
    process.stdout.write(TOKEN_HELP)
    return 0
  }
  const r = new EnvReader()
  const dataDir = resolve(r.string('VIGIL_DATA_DIR', '.vigil'))
  r.done()
  const problems: string[] = []
  const known: readonly string[] = [...ROLES, SERVICE_ROLE]
  const roles = flags.role ?? ['viewer']
  for (const role of roles)
    if (!known.includes(role)) problems.push(`--role "${role}": one of ${known.join(', ')}`)
  const subject = flags.subject ?? process.env.USER ?? 'dev'
  if (!/^[\w.@:-]{1,64}$/.test(subject)) problems.push('--subject: 1–64 letters, digits and . @ : - _')
  const m = /^(\d+)([smhd])$/.exec(flags.ttl ?? '1h')
  const ttlSeconds = m ? Number(m[1]) * (UNITS[m[2] as string] as number) : 0
  if (ttlSeconds < 1 || ttlSeconds > 30 * 86_400)
    problems.push('--ttl: a duration like 15m, 1h or 7d (at most 30d)')
  if (problems.length > 0) {
    process.stderr.write(`vigil token: ${problems.join('; ')}\n\n${TOKEN_HELP}`)
    return 2
  }
  const key = DevKey.exists(dataDir) ? await DevKey.open(dataDir) : undefined
  if (!key?.issuer) {
    process.stderr.write(
      `vigil token: no development issuer in ${dataDir}: run "vigil up" (with this VIGIL_DATA_DIR) first\n`,
    )
    return 1
  }
  process.stdout.write(`${await key.mint({ subject, roles: roles as Grant[], ttlSeconds })}\n`)
  return 0
}
