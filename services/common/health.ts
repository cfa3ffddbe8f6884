import { create } from '@bufbuild/protobuf'
import { Code, ConnectError, type ConnectRouter } from '@connectrpc/connect'
import {
  Health,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as Status,
} from '../../gen/health/v1/health_pb.js'

/** A named condition the process needs to serve, such as "nats connected". */
export interface ReadinessCheck {
  name: string
  ok: () => boolean
}

/**
 * What `/readyz` and grpc.health.v1 report. The process is ready once `markStarted()` was called,
 * while every readiness check passes and until `markDraining()`. Each served service reports the
 * overall status under its own name too, as gRPC health clients expect.
 */
export class HealthState {
  private started = false
  private draining = false
  private readonly checks: ReadinessCheck[] = []
  private readonly services = new Set<string>()

  addCheck(check: ReadinessCheck): void {
    this.checks.push(check)
  }

  addService(typeName: string): void {
    this.services.add(typeName)
  }

  markStarted(): void {
    this.started = true
  }

  markDraining(): void {
    this.draining = true
  }

  get isDraining(): boolean {
    return this.draining
  }

  /** Every check's result and whether the process is ready as a whole. */
  report(): { ready: boolean; started: boolean; draining: boolean; checks: Record<string, boolean> } {
    const checks = Object.fromEntries(this.checks.map((c) => [c.name, safe(c.ok)]))
    const ready = this.started && !this.draining && Object.values(checks).every(Boolean)
    return { ready, started: this.started, draining: this.draining, checks }
  }

  /** The status of `service` ("" for the whole server), or undefined when the service is unknown. */
  status(service: string): Status | undefined {
    if (service !== '' && !this.services.has(service)) return undefined
    return this.report().ready ? Status.SERVING : Status.NOT_SERVING
  }

  listServices(): string[] {
    return ['', ...this.services]
  }
}

function safe(check: () => boolean): boolean {
  try {
    return check()
  } catch {
    return false
  }
}

const WATCH_POLL_MS = 500

/** Mounts grpc.health.v1.Health (Check, Watch, List) on a router. */
export function healthRoutes(state: HealthState, drainSignal: AbortSignal) {
  const response = (status: Status): HealthCheckResponse => create(HealthCheckResponseSchema, { status })
  return (router: ConnectRouter) => {
    router.service(Health, {
      check(req) {
        const status = state.status(req.service)
        if (status === undefined) {
          throw new ConnectError(`unknown service "${req.service}"`, Code.NotFound)
        }
        return response(status)
      },
      async *watch(req, ctx) {
        // Watch sends the status at once and again whenever it changes; it ends when the client
        // goes away or the server drains, so a shutdown is never held up by watchers.
        let last: Status | undefined
        const stop = AbortSignal.any([ctx.signal, drainSignal])
        while (!stop.aborted) {
          const status = state.status(req.service) ?? Status.SERVICE_UNKNOWN
          if (status !== last) {
            last = status
            yield response(status)
          }
          await sleep(WATCH_POLL_MS, stop)
        }
        if (drainSignal.aborted && !ctx.signal.aborted) yield response(Status.NOT_SERVING)
      },
      list() {
        const statuses: Record<string, HealthCheckResponse> = {}
        for (const name of state.listServices())
          statuses[name] = response(state.status(name) ?? Status.UNKNOWN)
        return { statuses }
      },
    })
  }
}

/** Resolves after `ms` or as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const timer = setTimeout(done, ms)
    function done() {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    signal?.addEventListener('abort', done, { once: true })
  })
}
