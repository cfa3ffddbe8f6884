import { create } from '@bufbuild/protobuf'
import {
  type ListAnomaliesRequest,
  type ListAnomaliesResponse,
  ListAnomaliesResponseSchema,
} from '../../../gen/vigil/query/v1/query_pb.js'
import { invalidArgument } from '../../common/errors.js'
import { validateDeviceId } from '../../common/validation.js'
import { type QueryContext, rows } from '../context.js'
import { page, timeRange } from '../inputs.js'
import { type InferenceRow, inferenceFromRow } from './get-latest.js'

const LABELS: Record<string, string[]> = { '': ['WARN', 'ALERT'], WARN: ['WARN', 'ALERT'], ALERT: ['ALERT'] }

/** ListAnomalies: inferences labelled WARN or ALERT, newest first, filtered and paged. */
export async function listAnomalies(
  ctx: QueryContext,
  req: ListAnomaliesRequest,
): Promise<ListAnomaliesResponse> {
  const { startMs, endMs } = timeRange(req.start, req.end, { spanMs: 86_400_000 })
  const { limit, offset } = page(req.pageSize, req.pageToken)
  const labels = LABELS[req.minLabel]
  if (!labels) throw invalidArgument('filter', [{ field: 'min_label', description: 'must be WARN or ALERT' }])
  if (req.deviceId !== '') {
    const bad = validateDeviceId(req.deviceId)
    if (bad.length > 0) throw invalidArgument('filter', bad)
  }
  const found = await rows<InferenceRow & { device_id: string }>(
    ctx,
    `SELECT device_id, event_id, toUnixTimestamp64Milli(ts) AS ts_ms, score, label, anomaly_names, anomaly_severities,
            explain_names, explain_contributions, spe, spe_limit, t2, t2_limit, model_name, model_version, features
     FROM ${ctx.ch.table('anomalies')} FINAL
     WHERE ts >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
       AND has({labels:Array(String)}, label)
       AND ({device:String} = '' OR device_id = {device:String})
       AND ({site:String} = '' OR device_id IN (
             SELECT device_id FROM ${ctx.ch.table('device_latest')} FINAL WHERE site = {site:String}))
     ORDER BY ts DESC, device_id, event_id
     LIMIT {limit:UInt32} OFFSET {offset:UInt32}`,
    { start: startMs, end: endMs, labels, device: req.deviceId, site: req.site, limit: limit + 1, offset },
  )
  const more = found.length > limit
  return create(ListAnomaliesResponseSchema, {
    anomalies: found.slice(0, limit).map((r) => inferenceFromRow(r.device_id, r)),
    nextPageToken: more ? String(offset + limit) : '',
  })
}
