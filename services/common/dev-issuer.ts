// The development token issuer `vigil up` runs on a laptop: its own ES256 key pair kept in the data
// folder, a JWKS endpoint the services verify against (exactly as they would against a real OIDC
// provider), a sign-in page for the dashboard, and short-lived tokens for the CLI and the services.
// It signs whatever name and role are asked for: it is for one machine, never for production
// (set VIGIL_AUTH_JWKS_URL to a real issuer and it is off).
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { exportJWK, generateKeyPair, importJWK, type JWK, SignJWT } from 'jose'
import { ROLES, type Role, type SERVICE_ROLE } from './auth.js'

const ALG = 'ES256'
/** Tokens the sign-in page gives people last this long. */
export const SIGN_IN_TTL_SECONDS = 8 * 3600
const AUDIENCE = 'vigil'

/** What the data folder keeps of the issuer (mode 600): its key and where it was last served. */
interface IssuerFile {
  kid: string
  privateJwk: JWK
  publicJwk: JWK
  /** The issuer URL of the last `vigil up` (tokens minted by the CLI must name it). */
  issuer?: string
}

export interface TokenRequest {
  subject: string
  roles: readonly (Role | typeof SERVICE_ROLE)[]
  ttlSeconds: number
}

/** Signs tokens with the key kept in `<dataDir>/auth/issuer.json`, made on first use. */
export class DevKey {
  private constructor(
    private readonly file: string,
    private readonly stored: IssuerFile,
  ) {}

  static async open(dataDir: string): Promise<DevKey> {
    const dir = join(dataDir, 'auth')
    const file = join(dir, 'issuer.json')
    if (existsSync(file)) return new DevKey(file, JSON.parse(readFileSync(file, 'utf8')) as IssuerFile)
    mkdirSync(dir, { recursive: true, mode: 0o700 })
    const { privateKey, publicKey } = await generateKeyPair(ALG, { extractable: true })
    const kid = `dev-${Date.now().toString(36)}`
    const stored = { kid, privateJwk: await exportJWK(privateKey), publicJwk: await exportJWK(publicKey) }
    writeFileSync(file, JSON.stringify(stored), { mode: 0o600 })
    return new DevKey(file, stored)
  }

  /** The key folder's issuer file, when `vigil up` has made one. */
  static exists(dataDir: string): boolean {
    return existsSync(join(dataDir, 'auth', 'issuer.json'))
  }

  get issuer(): string | undefined {
    return this.stored.issuer
  }

  /** Records the URL the issuer is served at (the `iss` of every token from now on). */
  setIssuer(issuer: string): void {
    this.stored.issuer = issuer
    const tmp = `${this.file}.tmp`
    writeFileSync(tmp, JSON.stringify(this.stored), { mode: 0o600 })
    renameSync(tmp, this.file)
  }

  jwks(): { keys: JWK[] } {
    return { keys: [{ ...this.stored.publicJwk, kid: this.stored.kid, alg: ALG, use: 'sig' }] }
  }

  async mint(req: TokenRequest): Promise<string> {
    if (!this.stored.issuer) throw new Error('the development issuer has not been started (vigil up)')
    const key = await importJWK(this.stored.privateJwk, ALG)
    return new SignJWT({ roles: [...req.roles] })
      .setProtectedHeader({ alg: ALG, kid: this.stored.kid, typ: 'JWT' })
      .setIssuer(this.stored.issuer)
      .setAudience(AUDIENCE)
      .setSubject(req.subject)
      .setIssuedAt()
      .setExpirationTime(`${req.ttlSeconds}s`)
      .sign(key)
  }
}

export interface DevIssuer {
  /** The issuer URL (`iss`), also where it listens. */
  readonly url: string
  readonly jwksUrl: string
  /** The page people sign in on. */
  readonly signInUrl: string
  readonly key: DevKey
  close(): Promise<void>
}

/**
 * Serves the issuer on `host:port` (0: any free port): `/.well-known/jwks.json`,
 * `/.well-known/openid-configuration`, and `/sign-in` — a form asking a name and a role, which
 * sends the browser back to `dashboardUrl` with the token in the URL fragment (never to any other
 * address, so the page cannot be used to hand tokens to someone else's site).
 */
export async function startDevIssuer(opts: {
  dataDir: string
  host?: string
  port: number
  dashboardUrl: string
  /** Serve https with this certificate (vigil up --tls). */
  tls?: { cert: Buffer; key: Buffer }
}): Promise<DevIssuer> {
  const key = await DevKey.open(opts.dataDir)
  const host = opts.host ?? '127.0.0.1'
  const serve = (req: http.IncomingMessage, res: http.ServerResponse) => {
    void handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500)
      res.end()
    })
  }
  const server = opts.tls ? https.createServer(opts.tls, serve) : http.createServer(serve)
  let url = ''
  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method === 'GET' && path === '/.well-known/jwks.json') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'max-age=60' })
      return res.end(JSON.stringify(key.jwks()))
    }
    if (req.method === 'GET' && path === '/.well-known/openid-configuration') {
      res.writeHead(200, { 'Content-Type': 'application/json' })
      return res.end(
        JSON.stringify({
          issuer: url,
          jwks_uri: `${url}/.well-known/jwks.json`,
          id_token_signing_alg_values_supported: [ALG],
        }),
      )
    }
    if (req.method === 'GET' && path === '/sign-in') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' })
      return res.end(signInPage(opts.dashboardUrl))
    }
    if (req.method === 'POST' && path === '/sign-in') {
      const form = new URLSearchParams(await readBody(req, 4096))
      const name = (form.get('name') ?? '').trim()
      const role = form.get('role') ?? ''
      if (!/^[\w.@-]{1,64}$/.test(name) || !(ROLES as readonly string[]).includes(role)) {
        res.writeHead(400, { 'Content-Type': 'text/plain; charset=utf-8' })
        return res.end('name: 1–64 letters, digits, ".", "@", "-" or "_"; role: viewer, operator or admin\n')
      }
      const token = await key.mint({ subject: name, roles: [role as Role], ttlSeconds: SIGN_IN_TTL_SECONDS })
      res.writeHead(303, {
        Location: `${opts.dashboardUrl}#access_token=${token}`,
        'Cache-Control': 'no-store',
      })
      return res.end()
    }
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' })
    res.end('not found\n')
  }
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(opts.port, host, () => resolve())
  })
  const port = (server.address() as AddressInfo).port
  url = `${opts.tls ? 'https' : 'http'}://${host}:${port}`
  key.setIssuer(url)
  return {
    url,
    jwksUrl: `${url}/.well-known/jwks.json`,
    signInUrl: `${url}/sign-in`,
    key,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

function readBody(req: http.IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (chunk: string) => {
      body += chunk
      if (body.length > limit) {
        reject(new Error('form too large'))
        req.destroy()
      }
    })
    req.on('end', () => resolve(body))
    req.on('error', reject)
  })
}

function signInPage(dashboardUrl: string): string {
  const options = ROLES.map((r) => `<option${r === 'admin' ? ' selected' : ''}>${r}</option>`).join('')
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in to Vigil (development)</title>
<style>body{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}
label{display:block;margin:.8rem 0}input,select,button{font:inherit;padding:.3rem}</style></head>
<body><h1>Sign in to Vigil</h1>
<p>Development sign-in of <code>vigil up</code>: any name, the role you choose. Tokens last ${SIGN_IN_TTL_SECONDS / 3600} hours.
Production deployments use your OIDC provider instead (VIGIL_AUTH_JWKS_URL).</p>
<form method="post" action="/sign-in">
<label>Name <input name="name" value="dev" required pattern="[A-Za-z0-9_.@-]{1,64}"></label>
<label>Role <select name="role">${options}</select></label>
<button type="submit">Sign in</button></form>
<p>You will be sent back to <code>${escapeHtml(dashboardUrl)}</code>.</p></body></html>
`
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}
