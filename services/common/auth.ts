// Users and roles: user-facing RPCs require an OIDC access token (`Authorization: Bearer <JWT>`),
// verified against the issuer's JWKS (keys fetched, cached and refetched when an unknown key id
// appears, so rotation needs no restart). The roles come from a configurable claim; each RPC
// names the least role it needs: viewer (read) < operator (commands, devices) < admin (models,
// revocation). Server streams end when the token they were opened with expires.

import https from 'node:https'
import { Code, ConnectError, createContextKey, type Interceptor } from '@connectrpc/connect'
import {
  createRemoteJWKSet,
  customFetch,
  errors,
  type FetchImplementation,
  type JWTPayload,
  type JWTVerifyGetKey,
  jwtVerify,
} from 'jose'
import type { EnvReader } from './config.js'
import { RateLimiter } from './rate-limit.js'

export const ROLES = ['viewer', 'operator', 'admin'] as const
export type Role = (typeof ROLES)[number]
/**
 * The role of machine credentials (service tokens): it alone opens the internal RPCs (IngestService
 * for programs, Infer/InferBatch) and it is exempt from the per-user limits. It is outside the
 * user hierarchy: an admin token does not open internal RPCs, a service token opens nothing else.
 */
export const SERVICE_ROLE = 'service'
export type Grant = Role | typeof SERVICE_ROLE

/**
 * The organizational unit of services' certificates (`vigil certs` sets it). A client certificate
 * the server verified against VIGIL_TLS_CA with this unit is a service credential, like a token
 * with the role `service`; a device's certificate (same CA, another unit) is not.
 */
export const SERVICE_CERT_OU = 'vigil-services'

/** The verified client certificate of a call over mTLS, if any (set by the kit's server). */
export interface Peer {
  commonName: string
  organizationalUnit: string
}
export const peerKey = createContextKey<Peer | undefined>(undefined, { description: 'verified TLS client' })

export interface AuthConfig {
  jwksUrl: string
  issuer: string
  audience: string
  /** Claim holding the roles: an array or a space-separated string; dots reach into objects. */
  rolesClaim: string
  clockSkewSeconds: number
  /** Calls a second per user (token subject), with bursts up to `userBurst`; 0: no limit. */
  userRatePerSec: number
  userBurst: number
  /** Server streams (Watch, exports) one user may hold open at once. */
  userStreams: number
  /** The CA an https JWKS URL is checked against (VIGIL_AUTH_CA); else the system's. */
  jwksCa?: Buffer
}

/** VIGIL_AUTH_*: undefined (authentication off) unless VIGIL_AUTH_JWKS_URL is set. */
export function readAuthConfig(r: EnvReader): AuthConfig | undefined {
  const jwksUrl = r.url('VIGIL_AUTH_JWKS_URL', undefined, ['http', 'https'])
  const issuer = r.optionalString('VIGIL_AUTH_ISSUER')
  const audience = r.string('VIGIL_AUTH_AUDIENCE', 'vigil')
  const rolesClaim = r.string('VIGIL_AUTH_ROLES_CLAIM', 'roles')
  const clockSkewSeconds = r.int('VIGIL_AUTH_CLOCK_SKEW_SECONDS', 30, 0, 300)
  const userRatePerSec = r.int('VIGIL_USER_RATE', 50, 0, 1_000_000)
  const userBurst = r.int('VIGIL_USER_BURST', 100, 1, 1_000_000)
  const userStreams = r.int('VIGIL_USER_STREAMS', 10, 1, 10_000)
  const jwksCa = r.file('VIGIL_AUTH_CA')
  if (!jwksUrl) return undefined
  if (!issuer) {
    r.problem('VIGIL_AUTH_ISSUER: required with VIGIL_AUTH_JWKS_URL (tokens of any other issuer are refused)')
    return undefined
  }
  return {
    jwksUrl,
    issuer,
    audience,
    rolesClaim,
    clockSkewSeconds,
    userRatePerSec,
    userBurst,
    userStreams,
    ...(jwksCa ? { jwksCa } : {}),
  }
}

/** Who called: set by the interceptor for handlers (context value) and logs. */
export interface Caller {
  subject: string
  roles: Grant[]
  expiresAtMs: number
}

/**
 * The least role each method of a service needs (`default` for methods not listed); `service`
 * marks the internal methods that only service credentials open.
 */
export type RolePolicy = Record<string, { default: Grant; methods?: Record<string, Grant> }>

/** Who may call what, for every user-facing service. */
export const USER_POLICY: RolePolicy = {
  'vigil.query.v1.QueryService': { default: 'viewer' },
  'vigil.device.v1.DeviceService': {
    default: 'viewer',
    methods: {
      RegisterDevice: 'operator',
      UpdateDevice: 'operator',
      SendCommand: 'operator',
      RevokeDevice: 'admin',
    },
  },
  'vigil.inference.v1.InferenceService': {
    default: 'viewer',
    methods: { Infer: SERVICE_ROLE, InferBatch: SERVICE_ROLE, PromoteModel: 'admin', RollbackModel: 'admin' },
  },
  // Programs that publish readings over RPC hold service credentials, as the services do.
  'vigil.ingest.v1.IngestService': { default: SERVICE_ROLE },
}

/** Whether roles include what a method needs: `service` exactly, a user role or one above it. */
export function grants(roles: readonly Grant[], needed: Grant): boolean {
  if (needed === SERVICE_ROLE) return roles.includes(SERVICE_ROLE)
  return roles.some((r) => r !== SERVICE_ROLE && ROLES.indexOf(r) >= ROLES.indexOf(needed))
}

/**
 * The authentication interceptor. Services not in `policy` (health, reflection, the kit's echo)
 * are left open. `keys` is for tests; in production it is the issuer's remote JWKS.
 */
export function userAuthentication(
  config: AuthConfig,
  policy: RolePolicy = USER_POLICY,
  keys: JWTVerifyGetKey = createRemoteJWKSet(new URL(config.jwksUrl), {
    cooldownDuration: 30_000,
    ...(config.jwksCa ? { [customFetch]: fetchTrusting(config.jwksCa) } : {}),
  }),
): Interceptor {
  const calls = new RateLimiter(config.userRatePerSec, config.userBurst)
  const openStreams = new Map<string, number>()
  return (next) => async (req) => {
    const rule = policy[req.service.typeName]
    if (!rule) return next(req)
    const needed = rule.methods?.[req.method.name] ?? rule.default
    // A service's verified certificate opens what service tokens open, nothing else.
    if (needed === SERVICE_ROLE && req.contextValues.get(peerKey)?.organizationalUnit === SERVICE_CERT_OU)
      return next(req)
    const caller = await verify(req.header.get('authorization'), config, keys)
    if (!grants(caller.roles, needed))
      throw new ConnectError(
        `${req.method.name} needs the role ${needed}; the token of "${caller.subject}" has ${caller.roles.join(', ') || 'none'}`,
        Code.PermissionDenied,
      )
    // Services are not users: their calls are bounded by their own flow control, not by user limits.
    if (caller.roles.includes(SERVICE_ROLE)) return next(req)
    if (!calls.take(caller.subject))
      throw new ConnectError(
        `rate limit: at most ${config.userRatePerSec} calls a second per user (bursts of ${config.userBurst}); retry shortly`,
        Code.ResourceExhausted,
      )
    if (req.method.methodKind !== 'server_streaming' && req.method.methodKind !== 'bidi_streaming')
      return next(req)
    const open = openStreams.get(caller.subject) ?? 0
    if (open >= config.userStreams)
      throw new ConnectError(
        `at most ${config.userStreams} open streams per user; close one first`,
        Code.ResourceExhausted,
      )
    openStreams.set(caller.subject, open + 1)
    const release = () => {
      const n = (openStreams.get(caller.subject) ?? 1) - 1
      if (n <= 0) openStreams.delete(caller.subject)
      else openStreams.set(caller.subject, n)
    }
    try {
      const res = await next(req)
      if (!res.stream) {
        release()
        return res
      }
      return { ...res, message: untilExpiry(res.message, caller.expiresAtMs, release) }
    } catch (err) {
      release()
      throw err
    }
  }
}

async function verify(header: string | null, config: AuthConfig, keys: JWTVerifyGetKey): Promise<Caller> {
  const match = header ? /^Bearer\s+(\S+)$/i.exec(header) : null
  if (!match)
    throw new ConnectError(
      'missing credentials: send "Authorization: Bearer <access token>"',
      Code.Unauthenticated,
    )
  let payload: JWTPayload
  try {
    ;({ payload } = await jwtVerify(match[1] as string, keys, {
      issuer: config.issuer,
      audience: config.audience,
      clockTolerance: config.clockSkewSeconds,
      // Asymmetric signatures only: never "none", never a shared secret guessed from a public key.
      algorithms: ['RS256', 'RS384', 'RS512', 'PS256', 'ES256', 'ES384', 'EdDSA'],
      requiredClaims: ['exp', 'sub'],
    }))
  } catch (err) {
    throw new ConnectError(`invalid token: ${reason(err)}`, Code.Unauthenticated)
  }
  return {
    subject: String(payload.sub),
    roles: rolesOf(payload, config.rolesClaim),
    expiresAtMs: Number(payload.exp) * 1000 + config.clockSkewSeconds * 1000,
  }
}

/** Why a token was refused, in words that do not echo the token. */
function reason(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'expired'
  if (err instanceof errors.JWTClaimValidationFailed)
    return `claim "${err.claim}" ${err.reason.replace(/_/g, ' ')}`
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'signature does not verify'
  if (err instanceof errors.JWKSNoMatchingKey) return 'signed with a key the issuer does not publish'
  if (err instanceof errors.JOSEAlgNotAllowed) return 'signing algorithm not allowed'
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return 'malformed'
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JOSEError) return (err as Error).message
  return 'cannot be verified'
}

function rolesOf(payload: JWTPayload, claim: string): Grant[] {
  let value: unknown = payload
  for (const part of claim.split('.')) value = (value as Record<string, unknown> | undefined)?.[part]
  const list = Array.isArray(value) ? value : typeof value === 'string' ? value.split(' ') : []
  const known: readonly string[] = [...ROLES, SERVICE_ROLE]
  return list.filter((r): r is Grant => known.includes(r as string))
}

/** Passes a stream's messages on until the token expires, then ends it with Unauthenticated. */
async function* untilExpiry<T>(
  messages: AsyncIterable<T>,
  expiresAtMs: number,
  done: () => void,
): AsyncIterable<T> {
  try {
    for await (const m of messages) {
      if (Date.now() >= expiresAtMs)
        throw new ConnectError(
          'token expired: open the stream again with a fresh token',
          Code.Unauthenticated,
        )
      yield m
    }
  } finally {
    done()
  }
}

/** A fetch for the JWKS over https that trusts `ca` (Node's global fetch takes no CA). */
function fetchTrusting(ca: Buffer): FetchImplementation {
  return (url, options) =>
    new Promise<Response>((resolve, reject) => {
      const req = https.get(
        url,
        { ca, signal: options.signal, headers: Object.fromEntries(options.headers) },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => resolve(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 500 })))
          res.on('error', reject)
        },
      )
      req.on('error', reject)
    })
}
