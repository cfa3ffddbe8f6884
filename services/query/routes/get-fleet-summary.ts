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
  // Rates use received_at: the platform's clock, not the devices'.
  const [readings] = await rows<{ last_minute: string | number; in_window: string | number }>(
    ctx,
    `SELECT countIf(received_at >= fromUnixTimestamp64Milli({minute:Int64}, 'UTC')) AS last_minute, count() AS in_window
     FROM ${ctx.ch.table('telemetry')}
     WHERE received_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC')`,
    { minute: now - 60_000, since: now - windowMs },
  )
  const labels = await rows<{ label: string; n: string | number }>(
    ctx,
    `SELECT label, count() AS n FROM ${ctx.ch.table('inferences')} FINAL
     WHERE inferred_at >= fromUnixTimestamp64Milli({since:Int64}, 'UTC') GROUP BY label`,
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
    readingsPerSecond: Number(readings?.last_minute ?? 0) / 60,
    readingsInWindow: BigInt(readings?.in_window ?? 0),
    inferencesByLabel: Object.fromEntries(labels.map((l) => [l.label, BigInt(l.n)])),
    rejectedInWindow: BigInt(rejected?.n ?? 0),
  })
}
