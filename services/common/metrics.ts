import type { Interceptor } from '@connectrpc/connect'
import { Counter, collectDefaultMetrics, Gauge, Histogram, type Metric, Registry } from 'prom-client'
import { codeName, wrapStreamEnd } from './rpc.js'

/** The process's metrics registry, with Node's process metrics and Vigil's RPC metrics. */
export class Metrics {
  readonly registry = new Registry()
  readonly rpcHandled: Counter<'service' | 'method' | 'code'>
  readonly rpcSeconds: Histogram<'service' | 'method' | 'code'>
  readonly rpcInFlight: Gauge<'service' | 'method'>

  constructor(service: string) {
    this.registry.setDefaultLabels({ service })
    collectDefaultMetrics({ register: this.registry, prefix: 'vigil_' })
    this.rpcHandled = new Counter({
      name: 'vigil_rpc_server_handled_total',
      help: 'RPCs completed on the server, by method and status code.',
      labelNames: ['service', 'method', 'code'],
      registers: [this.registry],
    })
    this.rpcSeconds = new Histogram({
      name: 'vigil_rpc_server_handling_seconds',
      help: 'Time from receiving an RPC to its last response message, by method and status code.',
      labelNames: ['service', 'method', 'code'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [this.registry],
    })
    this.rpcInFlight = new Gauge({
      name: 'vigil_rpc_server_in_flight',
      help: 'RPCs being handled now.',
      labelNames: ['service', 'method'],
      registers: [this.registry],
    })
  }

  /** Counts and times every RPC, streaming ones until their last message. */
  interceptor(): Interceptor {
    return (next) => async (req) => {
      const labels = { service: req.service.typeName, method: req.method.name }
      const started = process.hrtime.bigint()
      this.rpcInFlight.inc(labels)
      const finish = (err: unknown) => {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9
        const code = err === undefined ? 'ok' : codeName(err)
        this.rpcInFlight.dec(labels)
        this.rpcHandled.inc({ ...labels, code })
        this.rpcSeconds.observe({ ...labels, code }, seconds)
      }
      let res: Awaited<ReturnType<typeof next>>
      try {
        res = await next(req)
      } catch (err) {
        finish(err)
        throw err
      }
      if (!res.stream) {
        finish(undefined)
        return res
      }
      return { ...res, message: wrapStreamEnd(res.message, finish) }
    }
  }
}

/**
 * The metric called `name` in `registry`, made by `make` the first time. Lets code that is built
 * more than once per process (writers, batchers) share one time series instead of failing on a
 * duplicate registration.
 */
export function registeredOnce<T extends Metric>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make()
}
