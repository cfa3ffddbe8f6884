import { create } from '@bufbuild/protobuf'
import {
  type GetFleetSummaryRequest,
  type GetFleetSummaryResponse,
  GetFleetSummaryResponseSchema,
} from '../../../gen/vigil/query/v1/query_pb.js'
import { invalidArgument } from '../../common/errors.js'
import { type QueryContext, rows } from '../context.js'
import { durationOrZero, MAX_SPAN_MS } from '../inputs.js'

/** GetFleetSummary: devices online, readings per second and inferences by label over a window. */
export async function getFleetSummary(
  ctx: QueryContext,
  req: GetFleetSummaryRequest,
): Promise<GetFleetSummaryResponse> {
  const windowMs = durationOrZero(req.window) || 3600_000
  if (windowMs < 1_000 || windowMs > MAX_SPAN_MS) {
    throw invalidArgument('window', [{ field: 'window', description: 'must be from 1 second to 400 days' }])
  }
  const now = Date.now()
  const [devices] = await rows<{ total: string | number; online: string | number }>(
    ctx,
    `SELECT count() AS total, countIf(last_seen >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')) AS online
     FROM (SELECT device_id, max(ts) AS last_seen FROM ${ctx.ch.table('device_latest')} GROUP BY device_id)`,
    { since: now - ctx.config.onlineWindowMs },
  )
  // Per-minute counters (by received_at: the platform's clock, not the devices'). The rate is over
  // the previous whole minute and the current one so far; windows start at a whole minute.
  const rateStart = Math.floor((now - 60_000) / 60_000) * 60_000
  const [readings] = await rows<{ recent: string | number; in_window: string | number }>(
    ctx,
    `SELECT sumIf(readings, minute >= toDateTime({rateStart:Int64} / 1000, 'UTC')) AS recent,
            sumIf(readings, minute >= toStartOfMinute(toDateTime({since:Int64} / 1000, 'UTC'))) AS in_window
     FROM ${ctx.ch.table('readings_1m')}
     WHERE minute >= toStartOfMinute(toDateTime({from:Int64} / 1000, 'UTC'))`,
    { rateStart, since: now - windowMs, from: Math.min(now - windowMs, rateStart) },
  )
  const labels = await rows<{ label: string; n: string | number }>(
    ctx,
    `SELECT label, sum(inferences) AS n FROM ${ctx.ch.table('inference_labels_1m')}
     WHERE minute >= toStartOfMinute(toDateTime({since:Int64} / 1000, 'UTC')) GROUP BY label`,
    { since: now - windowMs },
  )
  const [rejected] = await rows<{ n: string | number }>(
    ctx,
    `SELECT count() AS n FROM ${ctx.ch.table('rejected')} FINAL
     WHERE received_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')`,
    { since: now - windowMs },
  )
  return create(GetFleetSummaryResponseSchema, {
    devicesTotal: BigInt(devices?.total ?? 0),
    devicesOnline: BigInt(devices?.online ?? 0),
    readingsPerSecond: Number(readings?.recent ?? 0) / Math.max(1, (now - rateStart) / 1000),
    readingsInWindow: BigInt(readings?.in_window ?? 0),
    inferencesByLabel: Object.fromEntries(labels.map((l) => [l.label, BigInt(l.n)])),
    rejectedInWindow: BigInt(rejected?.n ?? 0),
  })
}
