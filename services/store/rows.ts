import type { Timestamp } from '@bufbuild/protobuf/wkt'
import {
  type Inference,
  type Reading,
  type Rejected,
  RejectReason,
} from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { toDateTime64 } from '../common/clickhouse.js'

const ms = (ts: Timestamp | undefined) => (ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : 0)

/** A reading as a row of `telemetry` (JSONEachRow). */
export function telemetryRow(r: Reading) {
  return {
    device_id: r.deviceId,
    ts: toDateTime64(ms(r.ts)),
    event_id: r.eventId,
    sensors: r.sensors,
    meta: r.meta,
    seq: r.seq.toString(),
    received_at: toDateTime64(ms(r.receivedAt)),
  }
}

/** An inference as a row of `inferences` (JSONEachRow). */
export function inferenceRow(i: Inference) {
  return {
    device_id: i.deviceId,
    ts: toDateTime64(ms(i.ts)),
    event_id: i.eventId,
    score: i.score,
    label: i.label,
    anomaly_names: i.anomalies.map((a) => a.name),
    anomaly_severities: i.anomalies.map((a) => a.severity),
    explain_names: i.explain?.shapTop.map((c) => c.name) ?? [],
    explain_contributions: i.explain?.shapTop.map((c) => c.contribution) ?? [],
    spe: i.explain?.spe ?? 0,
    spe_limit: i.explain?.speLimit ?? 0,
    t2: i.explain?.t2 ?? 0,
    t2_limit: i.explain?.t2Limit ?? 0,
    model_name: i.model?.name ?? '',
    model_version: i.model?.version ?? 0,
    features: i.features,
    inferred_at: toDateTime64(ms(i.inferredAt)),
  }
}

/** A dead letter as a row of `rejected` (`seq` is its stream sequence: the row's identity). */
export function rejectedRow(r: Rejected, seq: number) {
  return {
    received_at: toDateTime64(ms(r.receivedAt)),
    reason: (RejectReason[r.reason] ?? 'UNSPECIFIED').replace(/^REJECT_REASON_/, '').toLowerCase(),
    source: r.source,
    device_id: r.deviceId,
    detail: r.detail,
    raw_size: r.rawSize,
    seq,
  }
}

/** Row objects as JSONEachRow text, and how many. */
export function jsonEachRow(rows: object[]): { rows: number; text: string } {
  let text = ''
  for (const row of rows) text += `${JSON.stringify(row)}\n`
  return { rows: rows.length, text }
}
