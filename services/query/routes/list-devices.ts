import { create } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import {
  DeviceSummarySchema,
  type ListDevicesRequest,
  type ListDevicesResponse,
  ListDevicesResponseSchema,
} from '../../../gen/vigil/query/v1/query_pb.js'
import { invalidArgument } from '../../common/errors.js'
import { type QueryContext, rows } from '../context.js'
import { page } from '../inputs.js'

const ORDER: Record<string, string> = {
  device_id: 'device_id ASC',
  '-device_id': 'device_id DESC',
  last_seen: 'last_seen ASC, device_id',
  '-last_seen': 'last_seen DESC, device_id',
  score: 'score ASC, device_id',
  '-score': 'score DESC, device_id',
}

interface Row {
  device_id: string
  site: string
  firmware: string
  last_seen: string | number
  label: string
  score: number
  readings: string | number
  total: string | number
}

/** ListDevices: the fleet with last seen, site, firmware and latest label; filtered and paged. */
export async function listDevices(ctx: QueryContext, req: ListDevicesRequest): Promise<ListDevicesResponse> {
  const { limit, offset } = page(req.pageSize, req.pageToken)
  const order = ORDER[req.orderBy === '' ? 'device_id' : req.orderBy]
  if (!order) {
    throw invalidArgument('order', [
      { field: 'order_by', description: `must be one of ${Object.keys(ORDER).join(', ')}` },
    ])
  }
  // The ORDER BY clause comes from the fixed table above; everything the caller typed is a parameter.
  const found = await rows<Row>(
    ctx,
    `SELECT l.device_id AS device_id, l.site AS site, l.firmware AS firmware,
            toUnixTimestamp64Milli(l.last_seen) AS last_seen,
            ifNull(i.label, '') AS label, ifNull(i.score, 0) AS score, ifNull(c.readings, 0) AS readings,
            count() OVER () AS total
     FROM (SELECT device_id, argMax(site, ts) AS site, argMax(firmware, ts) AS firmware, max(ts) AS last_seen
           FROM ${ctx.ch.table('device_latest')} GROUP BY device_id) AS l
     LEFT JOIN (SELECT device_id, argMax(label, ts) AS label, argMax(score, ts) AS score
                FROM ${ctx.ch.table('inference_latest')} GROUP BY device_id) AS i ON i.device_id = l.device_id
     LEFT JOIN (SELECT device_id, sum(readings) AS readings
                FROM ${ctx.ch.table('device_counts')} GROUP BY device_id) AS c ON c.device_id = l.device_id
     WHERE ({site:String} = '' OR l.site = {site:String})
       AND ({search:String} = '' OR positionCaseInsensitive(l.device_id, {search:String}) > 0)
       AND ({label:String} = '' OR label = {label:String})
     ORDER BY ${order}
     LIMIT {limit:UInt32} OFFSET {offset:UInt32}`,
    { site: req.site, search: req.search, label: req.label, limit, offset },
  )
  const now = Date.now()
  const total = Number(found[0]?.total ?? 0)
  return create(ListDevicesResponseSchema, {
    devices: found.map((r) =>
      create(DeviceSummarySchema, {
        deviceId: r.device_id,
        site: r.site,
        firmware: r.firmware,
        lastSeen: timestampFromMs(Number(r.last_seen)),
        online: now - Number(r.last_seen) <= ctx.config.onlineWindowMs,
        latestLabel: r.label,
        latestScore: r.score,
        readings: BigInt(r.readings),
      }),
    ),
    nextPageToken: offset + found.length < total ? String(offset + found.length) : '',
    total: BigInt(total),
  })
}
