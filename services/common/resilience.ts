// Client interceptors for calls to a service that may be down: a retry with jittered backoff for
// calls that failed before doing anything (Unavailable), and a circuit breaker that stops calling
// a peer that keeps failing, so callers get an immediate answer instead of a timeout each.
import { Code, ConnectError, type Interceptor } from '@connectrpc/connect'
import { Counter, Gauge, type Registry } from 'prom-client'
import { registeredOnce } from './metrics.js'

/** Codes that say the peer is down or overloaded (not that the request was wrong). */
const PEER_FAILURES = new Set([
  Code.Unavailable,
  Code.DeadlineExceeded,
  Code.ResourceExhausted,
  Code.Internal,
])

/** Retries unary calls answered Unavailable, `attempts` times in all, after base·2^n ms ± 50% jitter. */
export function retryUnavailable(opts: { attempts?: number; baseMs?: number } = {}): Interceptor {
  const attempts = Math.max(1, opts.attempts ?? 2)
  const baseMs = opts.baseMs ?? 50
  return (next) => async (req) => {
    if (req.stream) return next(req)
    for (let attempt = 1; ; attempt++) {
      try {
        return await next(req)
      } catch (err) {
        const e = ConnectError.from(err)
        if (e.code !== Code.Unavailable || attempt >= attempts || req.signal.aborted) throw e
        const delay = baseMs * 2 ** (attempt - 1) * (0.5 + Math.random())
        await new Promise((resolve) => setTimeout(resolve, delay))
      }
    }
  }
}

export interface CircuitBreakerOptions {
  /** What is called, for messages and metric labels (e.g. `inference`). */
  target: string
  /** Consecutive peer failures that open the circuit (default 5). */
  threshold?: number
  /** How long it stays open before one trial call (default 5 s). */
  openMs?: number
  registry?: Registry
}

/**
 * Closed: calls go through and peer failures are counted. After `threshold` in a row: open, calls
 * fail at once with Unavailable. After `openMs`: one trial call; its success closes the circuit,
 * its failure opens it again.
 */
export function circuitBreaker(opts: CircuitBreakerOptions): Interceptor {
  const threshold = opts.threshold ?? 5
  const openMs = opts.openMs ?? 5_000
  let failures = 0
  let openedAt = 0
  let trial = false
  const metrics = opts.registry ? breakerMetrics(opts.registry) : undefined
  const setOpen = (open: boolean) => metrics?.open.set({ target: opts.target }, open ? 1 : 0)
  setOpen(false)
  return (next) => async (req) => {
    if (openedAt > 0) {
      if (trial || Date.now() - openedAt < openMs) {
        metrics?.rejected.inc({ target: opts.target })
        throw new ConnectError(
          `${opts.target} failed ${failures} times in a row: not called for ${Math.ceil(openMs / 1000)} s (circuit open)`,
          Code.Unavailable,
        )
      }
      trial = true
    }
    try {
      const res = await next(req)
      failures = 0
      openedAt = 0
      trial = false
      setOpen(false)
      return res
    } catch (err) {
      const e = ConnectError.from(err)
      if (PEER_FAILURES.has(e.code)) {
        failures++
        if (trial || failures >= threshold) {
          openedAt = Date.now()
          setOpen(true)
        }
      } else failures = 0
      trial = false
      throw e
    }
  }
}

function breakerMetrics(registry: Registry) {
  return {
    open: registeredOnce(
      registry,
      'vigil_circuit_open',
      () =>
        new Gauge({
          name: 'vigil_circuit_open',
          help: 'Whether calls to a target are suspended after repeated failures (1) or go through (0).',
          labelNames: ['target'],
          registers: [registry],
        }),
    ),
    rejected: registeredOnce(
      registry,
      'vigil_circuit_rejected_total',
      () =>
        new Counter({
          name: 'vigil_circuit_rejected_total',
          help: 'Calls answered at once because the circuit to their target was open.',
          labelNames: ['target'],
          registers: [registry],
        }),
    ),
  }
}
