// Serves the built dashboard (dist/dashboard, made by `npm run build`) from the query service's
// port: the app's files, and /dashboard-config.json telling it where the inference service is.
import { existsSync, readFileSync, statSync } from 'node:fs'
import { extname, join, normalize, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { HttpRoute } from '../common/server.js'

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.json': 'application/json',
}

/** Where `npm run build` puts the dashboard, from the source tree or from dist/. */
export function defaultDashboardDir(): string {
  const here = fileURLToPath(new URL('.', import.meta.url))
  return here.includes(`${sep}dist${sep}`)
    ? resolve(here, '../../dashboard')
    : resolve(here, '../../dist/dashboard')
}

/**
 * The dashboard's files and its config: where the inference service is and, when the services
 * require a token, that they do and where people sign in.
 */
export function dashboardRoute(opts: {
  dir: string
  inferenceUrl: string
  auth?: { signInUrl?: string }
}): HttpRoute {
  const root = resolve(opts.dir)
  const config = JSON.stringify({
    inferenceUrl: opts.inferenceUrl,
    auth: opts.auth ? { required: true, signInUrl: opts.auth.signInUrl } : { required: false },
  })
  return (req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return false
    const path = decodedPath(req.url)
    if (path === undefined) {
      res.writeHead(400, { 'Content-Type': 'text/plain; charset=utf-8' }).end('malformed path\n')
      return true
    }
    if (path.startsWith('/vigil.') || path.startsWith('/grpc.')) return false
    if (path === '/dashboard-config.json') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' })
      res.end(config)
      return true
    }
    const file = normalize(join(root, path === '/' ? 'index.html' : path))
    // Never outside the dashboard folder (no `..` tricks).
    if (file !== root && !file.startsWith(root + sep)) {
      res.writeHead(404).end()
      return true
    }
    if (!existsSync(file) || !statSync(file).isFile()) {
      if (!existsSync(join(root, 'index.html'))) {
        res.writeHead(503, { 'Content-Type': 'text/plain; charset=utf-8' })
        res.end('The dashboard is not built: run "npm run build" (npm start does it).\n')
      } else res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' }).end('not found\n')
      return true
    }
    const immutable = path.startsWith('/assets/')
    res.writeHead(200, {
      'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
      'Cache-Control': immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
    })
    if (req.method === 'HEAD') res.end()
    else res.end(readFileSync(file))
    return true
  }
}

/** The URL's path decoded, or undefined when it is malformed (bad escapes, NUL bytes). */
function decodedPath(url: string | undefined): string | undefined {
  try {
    const path = decodeURIComponent((url ?? '/').split('?')[0] ?? '/')
    return path.includes('\0') ? undefined : path
  } catch {
    return undefined
  }
}
