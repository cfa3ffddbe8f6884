import { randomUUID } from 'node:crypto'
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect'
import type { Logger } from './log.js'
import type { Metrics } from './metrics.js'
import { codeName, wrapStreamEnd } from './rpc.js'
import { tracingInterceptor } from './tracing.js'

/**
 * Turns anything that is not a ConnectError into `Internal` with an opaque incident id; the cause is
 * logged with that id and never sent to the client.
 */
export function errorNormalization(log: Logger): Interceptor {
  const normalize = (err: unknown, procedure: string): ConnectError => {
    if (err instanceof ConnectError) return err
    const incident = randomUUID()
    log.error({ err, procedure, incident }, 'unexpected error in handler')
    return new ConnectError(`internal error (incident ${incident})`, Code.Internal)
  }
  return (next) => async (req) => {
    let res: Awaited<ReturnType<typeof next>>
    try {
      res = await next(req)
    } catch (err) {
      throw normalize(err, req.url)
    }
    if (!res.stream) return res
    return {
      ...res,
      message: wrapStreamEnd(
        res.message,
        () => {},
        (err) => normalize(err, req.url),
      ),
    }
  }
}

/** Logs every completed RPC at debug and every failed one at warn (client errors) or error. */
export function requestLogging(log: Logger): Interceptor {
  const SERVER_FAULTS = new Set([Code.Internal, Code.Unknown, Code.DataLoss, Code.Unavailable])
  return (next) => async (req) => {
    const started = performance.now()
    const procedure = `${req.service.typeName}/${req.method.name}`
    const done = (err: unknown) => {
      const ms = Math.round((performance.now() - started) * 100) / 100
      if (err === undefined) {
        log.debug({ procedure, ms, protocol: req.header.get('content-type') }, 'rpc ok')
        return
      }
      const code = codeName(err)
      const fault = err instanceof ConnectError && SERVER_FAULTS.has(err.code)
      const fields = { procedure, ms, code, message: err instanceof Error ? err.message : String(err) }
      if (fault) log.error(fields, 'rpc failed')
      else log.info(fields, 'rpc rejected')
    }
    let res: Awaited<ReturnType<typeof next>>
    try {
      res = await next(req)
    } catch (err) {
      done(err)
      throw err
    }
    if (!res.stream) {
      done(undefined)
      return res
    }
    return { ...res, message: wrapStreamEnd(res.message, done) }
  }
}

/**
 * The standard chain, outermost first: metrics see the final code, logging sees normalized errors,
 * and authentication (when given) runs innermost, right before the handler.
 */
export function standardInterceptors(opts: {
  log: Logger
  metrics: Metrics
  authenticate?: Interceptor
}): Interceptor[] {
  const chain = [
    tracingInterceptor(),
    opts.metrics.interceptor(),
    requestLogging(opts.log),
    errorNormalization(opts.log),
  ]
  if (opts.authenticate) chain.push(opts.authenticate)
  return chain
}
