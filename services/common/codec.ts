import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire'
import type { Timestamp } from '@bufbuild/protobuf/wkt'
import type { Reading } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'

// The hot path of the bridge and ingest encodes every reading once. protobuf-es's `toBinary` walks
// the schema by reflection for each field; this writes the same bytes directly (the tests check
// byte-for-byte equality with `toBinary`). Field numbers follow proto/vigil/telemetry/v1.

// Sensor names, meta values and device ids repeat from reading to reading: keep their UTF-8 bytes
// rather than encoding the same text again each time. Bounded; cleared when full.
const utf8 = new Map<string, Uint8Array>()
const encoder = new TextEncoder()

function writeRepeatedString(w: BinaryWriter, field: number, text: string): void {
  let bytes = utf8.get(text)
  if (bytes === undefined) {
    if (utf8.size >= 20_000) utf8.clear()
    bytes = encoder.encode(text)
    utf8.set(text, bytes)
  }
  w.tag(field, WireType.LengthDelimited).bytes(bytes)
}

function writeTimestamp(w: BinaryWriter, field: number, ts: Timestamp): void {
  w.tag(field, WireType.LengthDelimited).fork()
  if (ts.seconds !== 0n) w.tag(1, WireType.Varint).int64(ts.seconds)
  if (ts.nanos !== 0) w.tag(2, WireType.Varint).int32(ts.nanos)
  w.join()
}

function writeReading(w: BinaryWriter, r: Reading): void {
  if (r.eventId !== '') w.tag(1, WireType.LengthDelimited).string(r.eventId)
  if (r.deviceId !== '') writeRepeatedString(w, 2, r.deviceId)
  if (r.ts) writeTimestamp(w, 3, r.ts)
  for (const name in r.sensors) {
    w.tag(4, WireType.LengthDelimited).fork()
    writeRepeatedString(w, 1, name)
    w.tag(2, WireType.Bit64).double(r.sensors[name]!)
    w.join()
  }
  for (const key in r.meta) {
    w.tag(5, WireType.LengthDelimited).fork()
    writeRepeatedString(w, 1, key)
    writeRepeatedString(w, 2, r.meta[key]!)
    w.join()
  }
  if (r.seq !== 0n) w.tag(6, WireType.Varint).uint64(r.seq)
  if (r.receivedAt) writeTimestamp(w, 7, r.receivedAt)
}

/** `toBinary(ReadingBatchSchema, {batchId, readings, source})`, without reflection. */
export function encodeReadingBatch(batchId: string, readings: Reading[], source: string): Uint8Array {
  const w = new BinaryWriter()
  if (batchId !== '') w.tag(1, WireType.LengthDelimited).string(batchId)
  for (const r of readings) {
    w.tag(2, WireType.LengthDelimited).fork()
    writeReading(w, r)
    w.join()
  }
  if (source !== '') w.tag(3, WireType.LengthDelimited).string(source)
  return w.finish()
}
