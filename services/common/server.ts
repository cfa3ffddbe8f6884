import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import http2, { type Http2ServerRequest, type Http2ServerResponse, type Http2Session } from 'node:http2'
import net, { type AddressInfo, type Socket } from 'node:net'
import { TLSSocket } from 'node:tls'
import type { DescService } from '@bufbuild/protobuf'
import {
  type ConnectRouter,
  cors,
  createContextKey,
  createContextValues,
  type Interceptor,
} from '@connectrpc/connect'
import { connectNodeAdapter } from '@connectrpc/connect-node'
import { type Peer, peerKey } from './auth.js'
import type { CommonConfig } from './config.js'
import { HealthState, healthRoutes } from './health.js'
import { standardInterceptors } from './interceptors.js'
import type { Logger } from './log.js'
import type { Metrics } from './metrics.js'
import { reflectionRoutes } from './reflection.js'

type Request = IncomingMessage | Http2ServerRequest
type Response = ServerResponse | Http2ServerResponse

/** Extra HTTP handler tried before the RPC router; returns true when it answered the request. */
export type HttpRoute = (req: Request, res: Response) => boolean | Promise<boolean>

/**
 * Aborted when the server starts draining. Long-lived streaming handlers read it from their context
 * (`ctx.values.get(drainSignalKey)`) and end themselves, so a shutdown never waits on a live stream.
 */
export const drainSignalKey = createContextKey<AbortSignal>(new AbortController().signal, {
  description: 'aborted when the server drains',
})

export interface ServerOptions {
  config: Pick<CommonConfig, 'service' | 'host' | 'port' | 'tls' | 'corsOrigins' | 'shutdownTimeoutMs'>
  log: Logger
  metrics: Metrics
  /** Registers the service implementations on the router. */
  routes: (router: ConnectRouter) => void
  /** Readiness; a fresh one when not given. Call `health.markStarted()` once dependencies are up. */
  health?: HealthState
  /** Runs innermost, right before handlers (authentication). */
  authenticate?: Interceptor
  /** Extra HTTP routes (the dashboard's files, for example). */
  httpRoutes?: HttpRoute[]
  /** Largest request message accepted, in bytes (default 8 MiB). */
  readMaxBytes?: number
}

/** A listening server. `close()` drains it: stop accepting, finish in-flight calls, then close. */
export interface RunningServer {
  readonly port: number
  /** `http://host:port` or `https://…`, with 127.0.0.1 for a wildcard host. */
  readonly url: string
  readonly health: HealthState
  readonly services: DescService[]
  close(): Promise<void>
}

const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
const SNIFF_TIMEOUT_MS = 10_000

/**
 * Starts one port that serves Connect, gRPC and gRPC-Web over HTTP/1.1 and HTTP/2, plus
 * grpc.health.v1, server reflection, /healthz, /readyz, /metrics and CORS. In clear text the first
 * bytes of each connection tell HTTP/2 (prior knowledge) from HTTP/1.1; with TLS, ALPN does.
 */
export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const { config, log, metrics } = opts
  const health = opts.health ?? new HealthState()
  const drain = new AbortController()
  const hardStop = new AbortController()
  const services: DescService[] = []

  const rpcHandler = connectNodeAdapter({
    routes(router) {
      opts.routes(router)
      healthRoutes(health, drain.signal)(router)
      for (const h of router.handlers) if (!services.includes(h.service)) services.push(h.service)
      for (const s of services) health.addService(s.typeName)
      reflectionRoutes(services)(router)
    },
    interceptors: standardInterceptors({ log, metrics, authenticate: opts.authenticate }),
    contextValues: (req) =>
      createContextValues().set(drainSignalKey, drain.signal).set(peerKey, verifiedPeer(req)),
    shutdownSignal: hardStop.signal,
    readMaxBytes: opts.readMaxBytes ?? 8 * 1024 * 1024,
    jsonOptions: { ignoreUnknownFields: false },
  })

  const allowAnyOrigin = config.corsOrigins.includes('*')
  const allowedHeaders = [...cors.allowedHeaders, 'Authorization', 'traceparent', 'tracestate'].join(', ')
  const exposedHeaders = [...cors.exposedHeaders].join(', ')
  const applyCors = (req: Request, res: Response): boolean => {
    const origin = req.headers.origin
    if (typeof origin !== 'string') return false
    if (!allowAnyOrigin && !config.corsOrigins.includes(origin)) return false
    res.setHeader('Access-Control-Allow-Origin', allowAnyOrigin ? '*' : origin)
    res.setHeader('Vary', 'Origin')
    res.setHeader('Access-Control-Expose-Headers', exposedHeaders)
    if (req.method === 'OPTIONS') {
      res.setHeader('Access-Control-Allow-Methods', cors.allowedMethods.join(', '))
      res.setHeader('Access-Control-Allow-Headers', allowedHeaders)
      res.setHeader('Access-Control-Max-Age', '7200')
      res.writeHead(204)
      res.end()
      return true
    }
    return false
  }

  let inFlight = 0
  let idle: (() => void) | undefined
  const handler = (req: Request, res: Response) => {
    inFlight++
    res.once('close', () => {
      inFlight--
      if (inFlight === 0) idle?.()
    })
    // HTTP/1.1 keep-alive connections are closed after their current response once draining.
    if (drain.signal.aborted && req.httpVersionMajor === 1) res.setHeader('Connection', 'close')
    void route(req, res).catch((err) => {
      log.error({ err, url: req.url }, 'http handler failed')
      if (!res.headersSent) res.writeHead(500)
      res.end()
    })
  }

  const route = async (req: Request, res: Response) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method === 'GET' || req.method === 'HEAD') {
      if (path === '/healthz') return text(res, 200, 'ok\n')
      if (path === '/readyz') {
        const report = health.report()
        return json(res, report.ready ? 200 : 503, report)
      }
      if (path === '/metrics') {
        const body = await metrics.registry.metrics()
        res.writeHead(200, { 'Content-Type': metrics.registry.contentType })
        res.end(body)
        return
      }
    }
    if (applyCors(req, res)) return
    for (const extra of opts.httpRoutes ?? []) if (await extra(req, res)) return
    rpcHandler(req, res)
  }

  const sockets = new Set<Socket>()
  const sessions = new Set<Http2Session>()
  const trackSession = (session: Http2Session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
  }
  let listener: net.Server
  let h1: http.Server | undefined
  if (config.tls) {
    const secure = http2.createSecureServer(
      {
        cert: config.tls.cert,
        key: config.tls.key,
        ...(config.tls.ca
          ? { ca: config.tls.ca, requestCert: true, rejectUnauthorized: config.tls.clientAuth !== 'optional' }
          : {}),
        allowHTTP1: true,
      },
      handler,
    )
    secure.on('session', trackSession)
    secure.on('secureConnection', (socket: TLSSocket) => {
      // Optional client certificates: none is fine, a wrong one is refused all the same.
      if (!socket.authorized && Object.keys(socket.getPeerCertificate() ?? {}).length > 0) {
        log.debug({ err: socket.authorizationError?.message }, 'client certificate refused')
        socket.destroy()
        return
      }
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
    })
    secure.on('tlsClientError', (err) => log.debug({ err: err.message }, 'tls handshake failed'))
    listener = secure
  } else {
    h1 = http.createServer(handler)
    const h2 = http2.createServer({}, handler)
    h2.on('session', trackSession)
    listener = net.createServer((socket) => {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
      sniff(socket, h1!, h2)
    })
  }

  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject)
    listener.listen(config.port, config.host, () => {
      listener.off('error', reject)
      resolve()
    })
  })
  const port = (listener.address() as AddressInfo).port
  const host = config.host === '0.0.0.0' || config.host === '::' ? '127.0.0.1' : config.host
  const url = `${config.tls ? 'https' : 'http'}://${host.includes(':') ? `[${host}]` : host}:${port}`
  log.info({ url, tls: Boolean(config.tls), mtls: Boolean(config.tls?.ca) }, 'listening')

  let closing: Promise<void> | undefined
  const close = () => {
    closing ??= (async () => {
      health.markDraining()
      drain.abort()
      const stopped = new Promise<void>((resolve) => listener.close(() => resolve()))
      for (const session of sessions) session.close()
      h1?.closeIdleConnections()
      if (inFlight > 0) {
        // In-flight calls finish on their own; only a call that outlives the grace period is cut.
        const grace = Math.max(100, config.shutdownTimeoutMs - 1_000)
        await new Promise<void>((resolve) => {
          idle = resolve
          setTimeout(resolve, grace).unref()
        })
      }
      hardStop.abort()
      for (const socket of sockets) socket.destroy()
      await stopped
      log.info({ url }, 'server closed')
    })()
    return closing
  }

  return { port, url, health, services, close }
}

/** Hands a clear-text connection to the HTTP/2 server when it starts with the preface, else HTTP/1.1. */
function sniff(socket: Socket, h1: http.Server, h2: http2.Http2Server): void {
  let seen: Buffer = Buffer.alloc(0)
  const cleanup = () => {
    socket.off('data', onData)
    socket.off('error', onError)
    socket.setTimeout(0)
  }
  const onError = () => socket.destroy()
  const onData = (chunk: Buffer) => {
    seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk])
    const n = Math.min(seen.length, H2_PREFACE.length)
    const looksH2 = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n))
    if (looksH2 && seen.length < H2_PREFACE.length) return
    cleanup()
    // Paused, the bytes read so far stay buffered: the HTTP/2 session reads that buffer when it
    // starts; the HTTP/1.1 parser gets it as soon as the socket flows again.
    socket.pause()
    socket.unshift(seen)
    if (looksH2) {
      h2.emit('connection', socket)
    } else {
      h1.emit('connection', socket)
      socket.resume()
    }
  }
  socket.on('data', onData)
  socket.on('error', onError)
  socket.setTimeout(SNIFF_TIMEOUT_MS, () => socket.destroy())
}

/** The verified client certificate of each TLS connection, read once per connection (not per call). */
const peers = new WeakMap<TLSSocket, Peer | undefined>()

/** The client certificate of a request's TLS connection, when the server verified it. */
function verifiedPeer(req: Request): Peer | undefined {
  const socket = 'stream' in req && req.stream ? req.stream.session?.socket : req.socket
  if (!(socket instanceof TLSSocket) || !socket.authorized) return undefined
  if (peers.has(socket)) return peers.get(socket)
  const subject = socket.getPeerCertificate()?.subject
  const first = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v) ?? ''
  const peer = subject?.CN
    ? { commonName: first(subject.CN), organizationalUnit: first(subject.OU) }
    : undefined
  peers.set(socket, peer)
  return peer
}

function text(res: Response, status: number, body: string): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' })
  res.end(body)
}

function json(res: Response, status: number, body: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json' })
  res.end(JSON.stringify(body))
}
