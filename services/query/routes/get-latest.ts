import { create } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import type { GetLatestRequest, GetLatestResponse } from '../../../gen/vigil/query/v1/query_pb.js'
import { GetLatestResponseSchema } from '../../../gen/vigil/query/v1/query_pb.js'
import { InferenceSchema, ReadingSchema } from '../../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { type QueryContext, rows } from '../context.js'
import { deviceId } from '../inputs.js'

interface ReadingRow {
  event_id: string
  ts_ms: string | number
  sensors: Record<string, number>
  meta: Record<string, string>
  seq: string
  received_ms: string | number
}

interface InferenceRow {
  event_id: string
  ts_ms: string | number
  score: number
  label: string
  anomaly_names: string[]
  anomaly_severities: string[]
  explain_names: string[]
  explain_contributions: number[]
  spe: number
  spe_limit: number
  t2: number
  t2_limit: number
  model_name: string
  model_version: number
  features: Record<string, number>
}

/** GetLatest: the newest reading and inference of one device. */
export async function getLatest(ctx: QueryContext, req: GetLatestRequest): Promise<GetLatestResponse> {
  const id = deviceId(req.deviceId)
  const [reading] = await rows<ReadingRow>(
    ctx,
    `SELECT event_id, toUnixTimestamp64Milli(ts) AS ts_ms, sensors, meta, toString(seq) AS seq,
            toUnixTimestamp64Milli(received_at) AS received_ms
     FROM ${ctx.ch.table('telemetry')} WHERE device_id = {id:String} ORDER BY ts DESC LIMIT 1`,
    { id },
  )
  if (!reading) throw new ConnectError(`no readings from device "${id}"`, Code.NotFound)
  const [inference] = await rows<InferenceRow>(
    ctx,
    `SELECT event_id, toUnixTimestamp64Milli(ts) AS ts_ms, score, label, anomaly_names, anomaly_severities,
            explain_names, explain_contributions, spe, spe_limit, t2, t2_limit, model_name, model_version, features
     FROM ${ctx.ch.table('inferences')} WHERE device_id = {id:String} ORDER BY ts DESC LIMIT 1`,
    { id },
  )
  return create(GetLatestResponseSchema, {
    reading: create(ReadingSchema, {
      eventId: reading.event_id,
      deviceId: id,
      ts: timestampFromMs(Number(reading.ts_ms)),
      sensors: reading.sensors,
      meta: reading.meta,
      seq: BigInt(reading.seq),
      receivedAt: timestampFromMs(Number(reading.received_ms)),
    }),
    ...(inference ? { inference: inferenceFromRow(id, inference) } : {}),
  })
}

/** An `inferences` row as the bus message. */
export function inferenceFromRow(id: string, row: InferenceRow) {
  return create(InferenceSchema, {
    eventId: row.event_id,
    deviceId: id,
    ts: timestampFromMs(Number(row.ts_ms)),
    score: row.score,
    label: row.label,
    anomalies: row.anomaly_names.map((name, i) => ({ name, severity: row.anomaly_severities[i] ?? '' })),
    explain: {
      shapTop: row.explain_names.map((name, i) => ({
        name,
        contribution: row.explain_contributions[i] ?? 0,
      })),
      spe: row.spe,
      speLimit: row.spe_limit,
      t2: row.t2,
      t2Limit: row.t2_limit,
    },
    model: { name: row.model_name, version: row.model_version },
    features: row.features,
  })
}

export type { InferenceRow }
