import type { Timestamp } from '@bufbuild/protobuf/wkt'
import { type Reading, type Rejected, RejectReason } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { toDateTime64 } from '../common/clickhouse.js'

/** A Timestamp in whole milliseconds (0 when absent), as the rows store it. */
export const ms = (ts: Timestamp | undefined) =>
  ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : 0

/**
 * A reading as a row of `telemetry` (JSONEachRow), as an object: the store writes the same row from
 * the bytes (lines.ts, tested against this); the benchmark's bare inserts send these.
 */
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
