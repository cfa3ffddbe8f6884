// Clients for the APIs the dashboard calls, over Connect-Web from the page's own origin (the query
// service serves the app); the inference service's address comes from /dashboard-config.json, as
// does whether the services want a token and where people sign in. The token arrives from the
// sign-in page in the URL fragment (#access_token=…), is kept in this browser's local storage and
// sent with every call.
import { type Client, ConnectError, createClient, type Interceptor } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-web'
import { DeviceService } from '../../../gen/vigil/device/v1/device_pb.js'
import { InferenceService } from '../../../gen/vigil/inference/v1/inference_pb.js'
import { QueryService } from '../../../gen/vigil/query/v1/query_pb.js'

const TOKEN_KEY = 'vigil.token'

/** Who is signed in, read from the token (for display; the services verify it). */
export interface SignedIn {
  name: string
  roles: string[]
  expiresAtMs: number
}

/** Keeps a token the sign-in page handed over in the URL fragment, and takes it out of the URL. */
function takeTokenFromUrl(): void {
  const match = /^#access_token=([\w.-]+)/.exec(window.location.hash)
  if (!match) return
  localStorage.setItem(TOKEN_KEY, match[1] as string)
  history.replaceState(null, '', `${window.location.pathname}${window.location.search}#/fleet`)
}
takeTokenFromUrl()

function token(): string | undefined {
  const t = localStorage.getItem(TOKEN_KEY) ?? undefined
  if (t && (signedInAs(t)?.expiresAtMs ?? 0) <= Date.now()) {
    localStorage.removeItem(TOKEN_KEY)
    return undefined
  }
  return t
}

function signedInAs(t: string): SignedIn | undefined {
  try {
    const part = (t.split('.')[1] ?? '').replace(/-/g, '+').replace(/_/g, '/')
    const claims = JSON.parse(atob(part)) as { sub?: string; roles?: string[]; exp?: number }
    return { name: claims.sub ?? '?', roles: claims.roles ?? [], expiresAtMs: (claims.exp ?? 0) * 1000 }
  } catch {
    return undefined
  }
}

/** The signed-in user, or undefined. */
export function signedIn(): SignedIn | undefined {
  const t = token()
  return t ? signedInAs(t) : undefined
}

export function signOut(): void {
  localStorage.removeItem(TOKEN_KEY)
}

const withToken: Interceptor = (next) => (req) => {
  const t = token()
  if (t) req.header.set('Authorization', `Bearer ${t}`)
  return next(req)
}

interface DashboardConfig {
  inferenceUrl: string
  auth: { required: boolean; signInUrl?: string }
}
let config: Promise<DashboardConfig> | undefined
/** The query service's settings for the dashboard. */
export function dashboardConfig(): Promise<DashboardConfig> {
  config ??= fetch('./dashboard-config.json').then((r) => r.json() as Promise<DashboardConfig>)
  return config
}

const transport = createConnectTransport({
  baseUrl: window.location.origin,
  useBinaryFormat: true,
  interceptors: [withToken],
})
export const query: Client<typeof QueryService> = createClient(QueryService, transport)
export const devices: Client<typeof DeviceService> = createClient(DeviceService, transport)

let inferenceClient: Promise<Client<typeof InferenceService>> | undefined
/** The inference service's client (its address from the query service's dashboard config). */
export function inference(): Promise<Client<typeof InferenceService>> {
  inferenceClient ??= dashboardConfig().then(({ inferenceUrl }) =>
    createClient(
      InferenceService,
      createConnectTransport({ baseUrl: inferenceUrl, useBinaryFormat: true, interceptors: [withToken] }),
    ),
  )
  return inferenceClient
}

/** An API error in words for people: the message, and what to do for the common codes. */
export function describe(err: unknown): string {
  const e = ConnectError.from(err)
  const hint: Record<number, string> = {
    14: 'the service is not reachable; it may be restarting',
    5: 'not found',
    3: 'the request was refused',
    7: 'your role does not allow this',
    16: 'sign in (again) to continue',
  }
  return `${e.rawMessage}${hint[e.code] && !e.rawMessage.includes(hint[e.code] as string) ? ` (${hint[e.code]})` : ''}`
}

export const tsMs = (ts: { seconds: bigint; nanos: number } | undefined) =>
  ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : 0
