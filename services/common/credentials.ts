// The credentials a process sends with its own RPCs: a bearer token from VIGIL_TOKEN, or from
// VIGIL_TOKEN_FILE (read again whenever the file changes, so a rotated token takes effect with no
// restart — the way `vigil up` and Kubernetes projected tokens hand them out). On a laptop the CLI
// falls back to a short-lived token from the development issuer's key in the data folder.
import { readFileSync, statSync } from 'node:fs'
import { resolve } from 'node:path'
import type { Interceptor } from '@connectrpc/connect'
import { SERVICE_ROLE } from './auth.js'
import type { EnvReader, TlsConfig } from './config.js'
import { DevKey } from './dev-issuer.js'

/** The token to send now, or undefined to send none. */
export type TokenSource = () => Promise<string | undefined>

/** VIGIL_TOKEN / VIGIL_TOKEN_FILE; undefined when neither is set. */
export function readTokenSource(r: EnvReader): TokenSource | undefined {
  const literal = r.optionalString('VIGIL_TOKEN')
  const file = r.optionalString('VIGIL_TOKEN_FILE')
  if (literal && file) r.problem('VIGIL_TOKEN and VIGIL_TOKEN_FILE: set one of them, not both')
  if (literal) return async () => literal
  if (file) return tokenFile(resolve(file))
  return undefined
}

/** The token in a file, re-read when its modification time changes (checked once a second at most). */
export function tokenFile(path: string): TokenSource {
  let token: string | undefined
  let mtimeMs = -1
  let checkedAt = 0
  return async () => {
    const now = Date.now()
    if (now - checkedAt < 1_000 && token !== undefined) return token
    checkedAt = now
    try {
      const m = statSync(path).mtimeMs
      if (m !== mtimeMs) {
        token = readFileSync(path, 'utf8').trim() || undefined
        mtimeMs = m
      }
    } catch (err) {
      throw new Error(`VIGIL_TOKEN_FILE: cannot read "${path}": ${(err as Error).message}`)
    }
    return token
  }
}

/**
 * The CLI's credentials: VIGIL_TOKEN / VIGIL_TOKEN_FILE, else — when `vigil up` runs its
 * development issuer from this data folder — a 10-minute admin token minted with its key.
 */
export function cliTokenSource(r: EnvReader, dataDir: string): TokenSource | undefined {
  const configured = readTokenSource(r)
  if (configured || !DevKey.exists(dataDir)) return configured
  let cached: { token: string; until: number } | undefined
  return async () => {
    if (cached && Date.now() < cached.until) return cached.token
    const key = await DevKey.open(dataDir)
    if (!key.issuer) return undefined
    const token = await key.mint({ subject: 'cli', roles: ['admin', SERVICE_ROLE], ttlSeconds: 600 })
    cached = { token, until: Date.now() + 540_000 }
    return token
  }
}

/** Sends `Authorization: Bearer <token>` with every call (unless the call sets its own). */
export function bearer(source: TokenSource | undefined): Interceptor[] {
  if (!source) return []
  return [
    (next) => async (req) => {
      const token = await source()
      if (token && !req.header.has('authorization')) req.header.set('Authorization', `Bearer ${token}`)
      return next(req)
    },
  ]
}

/**
 * TLS options for a process's own calls to other services: trust VIGIL_TLS_CA and present the
 * process's certificate (VIGIL_TLS_CERT/KEY), which `vigil certs` issues for server and client use.
 * Undefined without a CA: system trust, no client certificate.
 */
export function outboundTls(
  tls: TlsConfig | undefined,
): { ca: Buffer; cert: Buffer; key: Buffer } | undefined {
  return tls?.ca ? { ca: tls.ca, cert: tls.cert, key: tls.key } : undefined
}
