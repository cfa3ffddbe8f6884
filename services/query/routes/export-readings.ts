import { create } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import {
  type ExportReadingsRequest,
  type ExportReadingsResponse,
  ExportReadingsResponseSchema,
} from '../../../gen/vigil/query/v1/query_pb.js'
import { ReadingSchema } from '../../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { invalidArgument, type Violation } from '../../common/errors.js'
import { LIMITS, validateDeviceId } from '../../common/validation.js'
import { type QueryContext, rows as readRows } from '../context.js'
import { timeRange } from '../inputs.js'

export const EXPORT_DEFAULT = 100_000
export const EXPORT_MAX = 1_000_000
const CHUNK = 2_000

interface Row {
  device_id: string
  ts_ms: string | number
  event_id: string
  sensors: Record<string, number>
  meta: Record<string, string>
  seq: string
  received_ms: string | number
}

/**
 * ExportReadings: stored readings of a device, a site or the fleet in a time range, oldest first,
 * one per event id, streamed in chunks of 2,000 (the reading path for `vigil train`).
 */
export async function* exportReadings(
  ctx: QueryContext,
  req: ExportReadingsRequest,
): AsyncGenerator<ExportReadingsResponse> {
  const violations: Violation[] = []
  if (req.deviceId && req.site)
    violations.push({ field: 'site', description: 'give a device or a site, not both' })
  if (req.deviceId) violations.push(...validateDeviceId(req.deviceId))
  if (req.site.length > LIMITS.metaValueMaxLength)
    violations.push({ field: 'site', description: `must be at most ${LIMITS.metaValueMaxLength} characters` })
  if (req.limit > EXPORT_MAX)
    violations.push({ field: 'limit', description: `must be at most ${EXPORT_MAX}` })
  if (violations.length > 0) throw invalidArgument('ExportReadingsRequest', violations)
  const { startMs, endMs } = timeRange(req.start, req.end, { spanMs: 0, requireStart: true })
  const limit = req.limit || EXPORT_DEFAULT
  const rows = await readRows<Row>(
    ctx,
    `SELECT device_id, toUnixTimestamp64Milli(ts) AS ts_ms, event_id, sensors, meta, toString(seq) AS seq,
                   toUnixTimestamp64Milli(received_at) AS received_ms
            FROM ${ctx.ch.table('telemetry')} FINAL
            WHERE ts >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
              AND (empty({device:String}) OR device_id = {device:String})
              AND (empty({site:String}) OR meta['site'] = {site:String})
            ORDER BY ts, device_id, event_id
            LIMIT {limit:UInt32}`,
    { start: startMs, end: endMs, device: req.deviceId, site: req.site, limit: limit + 1 },
  )
  const truncated = rows.length > limit
  const kept = truncated ? rows.slice(0, limit) : rows
  for (let i = 0; i < kept.length || i === 0; i += CHUNK) {
    const chunk = kept.slice(i, i + CHUNK)
    yield create(ExportReadingsResponseSchema, {
      readings: chunk.map((r) =>
        create(ReadingSchema, {
          deviceId: r.device_id,
          ts: timestampFromMs(Number(r.ts_ms)),
          eventId: r.event_id,
          sensors: r.sensors,
          meta: r.meta,
          seq: BigInt(r.seq),
          receivedAt: timestampFromMs(Number(r.received_ms)),
        }),
      ),
      truncated: truncated && i + CHUNK >= kept.length,
    })
  }
}
