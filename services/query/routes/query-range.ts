import { create } from '@bufbuild/protobuf'
import { durationFromMs, timestampFromMs } from '@bufbuild/protobuf/wkt'
import {
  PointSchema,
  type QueryRangeRequest,
  type QueryRangeResponse,
  QueryRangeResponseSchema,
  type Series,
  SeriesSchema,
} from '../../../gen/vigil/query/v1/query_pb.js'
import { invalidArgument } from '../../common/errors.js'
import { type QueryContext, rows } from '../context.js'
import { deviceId, durationOrZero, MAX_BUCKETS, timeRange } from '../inputs.js'

const MAX_RAW_POINTS = 20_000

interface BucketRow {
  sensor: string
  bucket_ms: string | number
  n: string | number
  lo: number
  mean: number
  hi: number
  p95: number
}

/**
 * QueryRange: one device's sensors over a time range, raw (step 0) or in buckets of `step` with
 * count/min/avg/max/p95. Steps that are whole minutes read the one-minute rollup; shorter ones
 * aggregate the raw rows.
 */
export async function queryRange(ctx: QueryContext, req: QueryRangeRequest): Promise<QueryRangeResponse> {
  const id = deviceId(req.deviceId)
  const { startMs, endMs } = timeRange(req.start, req.end, { spanMs: 3600_000, requireStart: true })
  const stepMs = durationOrZero(req.step)
  if (stepMs < 0 || (stepMs > 0 && stepMs < 1)) {
    throw invalidArgument('step', [{ field: 'step', description: 'must be zero (raw) or positive' }])
  }
  if (stepMs > 0 && (endMs - startMs) / stepMs > MAX_BUCKETS) {
    throw invalidArgument('step', [
      {
        field: 'step',
        description: `gives more than ${MAX_BUCKETS} buckets for this range; use a larger step`,
      },
    ])
  }
  const params = {
    id,
    start: startMs,
    end: endMs,
    sensors: req.sensors,
    step: Math.round(stepMs),
    stepSec: Math.round(stepMs / 1000),
  }
  const bySensor = new Map<string, Series>()
  const series = (sensor: string) => {
    let s = bySensor.get(sensor)
    if (!s) {
      s = create(SeriesSchema, { sensor })
      bySensor.set(sensor, s)
    }
    return s
  }
  const sensorFilter = `(empty({sensors:Array(String)}) OR has({sensors:Array(String)}, sensor))`
  let source: string
  if (stepMs === 0) {
    source = 'raw'
    const raw = await rows<{ sensor: string; ts_ms: string | number; value: number }>(
      ctx,
      `SELECT sensor, toUnixTimestamp64Milli(ts) AS ts_ms, value
       FROM ${ctx.ch.table('telemetry')} FINAL
       ARRAY JOIN mapKeys(sensors) AS sensor, mapValues(sensors) AS value
       WHERE device_id = {id:String}
         AND ts >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
         AND ${sensorFilter}
       ORDER BY sensor, ts LIMIT ${MAX_RAW_POINTS + 1}`,
      params,
    )
    if (raw.length > MAX_RAW_POINTS) {
      throw invalidArgument('range', [
        {
          field: 'step',
          description: `the range holds more than ${MAX_RAW_POINTS} raw points; ask for buckets with a step`,
        },
      ])
    }
    for (const r of raw)
      series(r.sensor).points.push(
        create(PointSchema, { ts: timestampFromMs(Number(r.ts_ms)), value: r.value, count: 1n }),
      )
  } else {
    const useRollup = stepMs % 60_000 === 0
    source = useRollup ? 'rollup_1m' : 'telemetry'
    const buckets = await rows<BucketRow>(
      ctx,
      useRollup
        ? `SELECT sensor, toUnixTimestamp(toStartOfInterval(minute, toIntervalSecond({stepSec:UInt32}))) * 1000 AS bucket_ms,
                  sum(count) AS n, min(min) AS lo, sum(sum) / sum(count) AS mean, max(max) AS hi,
                  quantilesTDigestMerge(0.5, 0.95)(quantiles)[2] AS p95
           FROM ${ctx.ch.table('telemetry_1m')}
           WHERE device_id = {id:String}
             AND minute >= toStartOfMinute(fromUnixTimestamp64Milli({start:Int64}, 'UTC'))
             AND minute < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
             AND ${sensorFilter}
           GROUP BY sensor, bucket_ms ORDER BY sensor, bucket_ms`
        : `SELECT sensor, intDiv(toUnixTimestamp64Milli(ts), {step:UInt32}) * {step:UInt32} AS bucket_ms,
                  count() AS n, min(value) AS lo, avg(value) AS mean, max(value) AS hi,
                  quantile(0.95)(value) AS p95
           FROM ${ctx.ch.table('telemetry')} FINAL
           ARRAY JOIN mapKeys(sensors) AS sensor, mapValues(sensors) AS value
           WHERE device_id = {id:String}
             AND ts >= fromUnixTimestamp64Milli({start:Int64}, 'UTC') AND ts < fromUnixTimestamp64Milli({end:Int64}, 'UTC')
             AND ${sensorFilter}
           GROUP BY sensor, bucket_ms ORDER BY sensor, bucket_ms`,
      params,
    )
    for (const b of buckets) {
      series(b.sensor).points.push(
        create(PointSchema, {
          ts: timestampFromMs(Number(b.bucket_ms)),
          count: BigInt(b.n),
          min: b.lo,
          avg: b.mean,
          max: b.hi,
          p95: b.p95,
        }),
      )
    }
  }
  return create(QueryRangeResponseSchema, {
    series: [...bySensor.values()],
    source,
    step: durationFromMs(stepMs),
  })
}
