import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect'
import { EchoService } from '../../gen/vigil/kit/v1/kit_pb.js'
import { sleep } from './health.js'
import { drainSignalKey } from './server.js'

/** Mounts vigil.kit.v1.EchoService: a diagnostic every server can serve, used by the kit's tests. */
export function echoRoutes(router: ConnectRouter): void {
  router.service(EchoService, {
    async echo(req, ctx) {
      if (req.message.length > 4096) {
        throw new ConnectError('message: at most 4096 characters', Code.InvalidArgument)
      }
      if (req.delayMs > 60_000) throw new ConnectError('delay_ms: at most 60000', Code.InvalidArgument)
      // A delayed echo keeps going through a drain: it is the in-flight call a shutdown must finish.
      if (req.delayMs > 0) await sleep(req.delayMs, ctx.signal)
      if (ctx.signal.aborted) throw new ConnectError('cancelled', Code.Canceled)
      return { message: req.message }
    },
    async *echoStream(req, ctx) {
      if (req.count < 1 || req.count > 1000) {
        throw new ConnectError('count: must be from 1 to 1000', Code.InvalidArgument)
      }
      if (req.intervalMs > 10_000) throw new ConnectError('interval_ms: at most 10000', Code.InvalidArgument)
      const stop = AbortSignal.any([ctx.signal, ctx.values.get(drainSignalKey)])
      for (let index = 0; index < req.count && !stop.aborted; index++) {
        if (index > 0 && req.intervalMs > 0) await sleep(req.intervalMs, stop)
        if (stop.aborted) break
        yield { message: req.message, index }
      }
    },
  })
}
