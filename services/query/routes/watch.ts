import { create, fromBinary } from '@bufbuild/protobuf'
import { timestampNow } from '@bufbuild/protobuf/wkt'
import type { HandlerContext } from '@connectrpc/connect'
import {
  type WatchRequest,
  type WatchResponse,
  WatchResponseSchema,
} from '../../../gen/vigil/query/v1/query_pb.js'
import {
  AlertSchema,
  InferenceBatchSchema,
  ReadingBatchSchema,
} from '../../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { invalidArgument } from '../../common/errors.js'
import { sleep } from '../../common/health.js'
import type { MsgHdrs } from '../../common/nats.js'
import { RateLimiter } from '../../common/rate-limit.js'
import { drainSignalKey } from '../../common/server.js'
import { contextFromHeaders, SpanKind, startSpan } from '../../common/tracing.js'
import { validateDeviceId } from '../../common/validation.js'
import type { QueryContext } from '../context.js'

/** Events waiting for a slow client at most; beyond it the oldest are dropped and counted. */
export const WATCH_BUFFER = 1_000
/** Events per second a stream of all devices may carry. */
export const WATCH_ALL_RATE = 2_000
const HEARTBEAT_MS = 5_000
const MAX_DEVICES = 1_000

type Event = WatchResponse['event']

/**
 * Watch: live readings, inferences and alerts of chosen devices (all when none are chosen, with a
 * rate cap), from NATS subscriptions. Each stream has a bounded buffer: a client that reads too
 * slowly loses the oldest events, and `dropped` says how many, so the server never grows.
 */
export async function* watch(
  ctx: QueryContext,
  req: WatchRequest,
  hctx: HandlerContext,
): AsyncGenerator<WatchResponse> {
  if (req.deviceIds.length > MAX_DEVICES) {
    throw invalidArgument('watch', [{ field: 'device_ids', description: `at most ${MAX_DEVICES} devices` }])
  }
  const violations = req.deviceIds.flatMap((id, i) => validateDeviceId(id, `device_ids[${i}]`))
  if (violations.length > 0) throw invalidArgument('watch', violations)
  const all = !req.readings && !req.inferences && !req.alerts
  const want = { readings: all || req.readings, inferences: all || req.inferences, alerts: all || req.alerts }
  const devices = req.deviceIds.length > 0 ? new Set(req.deviceIds) : undefined
  const cap = devices ? undefined : new RateLimiter(WATCH_ALL_RATE, WATCH_ALL_RATE)

  const queue: Event[] = []
  let dropped = 0n
  let wake: (() => void) | undefined
  const push = (event: Event) => {
    if (cap && !cap.take('all')) {
      dropped++
      return
    }
    if (queue.length >= WATCH_BUFFER) {
      queue.shift()
      dropped++
    }
    queue.push(event)
    wake?.()
  }
  const subs = []
  if (want.readings) {
    subs.push(
      ctx.nc.subscribe('telemetry.raw.>', {
        callback: (_err, msg) => {
          traceDelivery('watch.deliver ReadingBatch', msg.headers)
          try {
            for (const r of fromBinary(ReadingBatchSchema, msg.data).readings) {
              if (!devices || devices.has(r.deviceId)) push({ case: 'reading', value: r })
            }
          } catch {
            // Not a batch: the store dead-letters it; a watcher just skips it.
          }
        },
      }),
    )
  }
  if (want.inferences) {
    subs.push(
      ctx.nc.subscribe('telemetry.inferred.>', {
        callback: (_err, msg) => {
          traceDelivery('watch.deliver InferenceBatch', msg.headers)
          try {
            for (const i of fromBinary(InferenceBatchSchema, msg.data).inferences) {
              if (!devices || devices.has(i.deviceId)) push({ case: 'inference', value: i })
            }
          } catch {}
        },
      }),
    )
  }
  if (want.alerts) {
    for (const subject of devices ? [...devices].map((id) => `alerts.${id}`) : ['alerts.>']) {
      subs.push(
        ctx.nc.subscribe(subject, {
          callback: (_err, msg) => {
            try {
              push({ case: 'alert', value: fromBinary(AlertSchema, msg.data) })
            } catch {}
          },
        }),
      )
    }
  }
  const stop = AbortSignal.any([hctx.signal, hctx.values.get(drainSignalKey)])
  try {
    while (!stop.aborted) {
      if (queue.length === 0) {
        const woken = new Promise<void>((resolve) => {
          wake = resolve
        })
        await Promise.race([woken, sleep(HEARTBEAT_MS, stop)])
        wake = undefined
        if (queue.length === 0) {
          if (!stop.aborted)
            yield create(WatchResponseSchema, {
              event: { case: 'heartbeat', value: timestampNow() },
              dropped,
            })
          continue
        }
      }
      const event = queue.shift()!
      yield create(WatchResponseSchema, { event, dropped })
    }
  } finally {
    for (const sub of subs) sub.unsubscribe()
  }
}

/** Tracing (when on): a span marking that a batch reached a Watch stream, in the batch's trace. */
function traceDelivery(name: string, headers: MsgHdrs | undefined): void {
  const parent = contextFromHeaders(headers)
  if (parent) startSpan(name, { parent, kind: SpanKind.CONSUMER })?.end()
}
