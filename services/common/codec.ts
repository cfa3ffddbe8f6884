import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire'
import type { Timestamp } from '@bufbuild/protobuf/wkt'
import type { Inference, Reading } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'

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

// Decoding: the same idea the other way, for the consumers of ReadingBatch (the async inference
// workers read every batch once). The result equals `fromBinary(ReadingBatchSchema, bytes)` for
// every known field (the tests check it); unknown fields are skipped; malformed input throws.

function readTimestamp(r: BinaryReader): Timestamp {
  const end = r.uint32() + r.pos
  let seconds = 0n
  let nanos = 0
  while (r.pos < end) {
    const [no, wt] = r.tag()
    if (no === 1 && wt === WireType.Varint) seconds = BigInt(r.int64())
    else if (no === 2 && wt === WireType.Varint) nanos = r.int32()
    else r.skip(wt, no)
  }
  return { $typeName: 'google.protobuf.Timestamp', seconds, nanos }
}

function readEntry<V>(r: BinaryReader, value: (r: BinaryReader) => V, zero: V): [string, V] {
  const end = r.uint32() + r.pos
  let k = ''
  let v = zero
  while (r.pos < end) {
    const [no, wt] = r.tag()
    if (no === 1 && wt === WireType.LengthDelimited) k = r.string()
    else if (no === 2) v = value(r)
    else r.skip(wt, no)
  }
  return [k, v]
}

const readDouble = (r: BinaryReader) => r.double()
const readString = (r: BinaryReader) => r.string()

function readReading(r: BinaryReader, end: number): Reading {
  const reading: Reading = {
    $typeName: 'vigil.telemetry.v1.Reading',
    eventId: '',
    deviceId: '',
    sensors: {},
    meta: {},
    seq: 0n,
  }
  while (r.pos < end) {
    const [no, wt] = r.tag()
    if (wt === WireType.LengthDelimited) {
      if (no === 1) reading.eventId = r.string()
      else if (no === 2) reading.deviceId = r.string()
      else if (no === 3) reading.ts = readTimestamp(r)
      else if (no === 4) {
        const [k, v] = readEntry(r, readDouble, 0)
        reading.sensors[k] = v
      } else if (no === 5) {
        const [k, v] = readEntry(r, readString, '')
        reading.meta[k] = v
      } else if (no === 7) reading.receivedAt = readTimestamp(r)
      else r.skip(wt, no)
    } else if (no === 6 && wt === WireType.Varint) reading.seq = BigInt(r.uint64())
    else r.skip(wt, no)
  }
  if (r.pos !== end) throw new Error('a Reading ends past its length')
  return reading
}

/** `fromBinary(ReadingBatchSchema, bytes)` without reflection: batch id, readings, source. */
export function decodeReadingBatch(bytes: Uint8Array): {
  batchId: string
  readings: Reading[]
  source: string
} {
  const r = new BinaryReader(bytes)
  let batchId = ''
  let source = ''
  const readings: Reading[] = []
  while (r.pos < r.len) {
    const [no, wt] = r.tag()
    if (no === 2 && wt === WireType.LengthDelimited) {
      const end = r.uint32() + r.pos
      if (end > r.len) throw new Error('premature end of a ReadingBatch')
      readings.push(readReading(r, end))
    } else if (no === 1 && wt === WireType.LengthDelimited) batchId = r.string()
    else if (no === 3 && wt === WireType.LengthDelimited) source = r.string()
    else r.skip(wt, no)
  }
  return { batchId, readings, source }
}

/** An Inference as the encoder takes it: the message's fields, without the message type. */
export type InferenceFields = Omit<
  Inference,
  '$typeName' | 'anomalies' | 'explain' | 'model' | 'ts' | 'inferredAt'
> & {
  ts?: Pick<Timestamp, 'seconds' | 'nanos'>
  inferredAt?: Pick<Timestamp, 'seconds' | 'nanos'>
  anomalies: { name: string; severity: string; ratio: number }[]
  explain?: {
    shapTop: { name: string; contribution: number; value: number }[]
    spe: number
    speLimit: number
    t2: number
    t2Limit: number
  }
  model?: { name: string; version: number }
}

function writeDouble(w: BinaryWriter, field: number, value: number): void {
  // proto3 leaves zero out; protobuf-es writes -0 (it is not 0 bit for bit).
  if (value !== 0 || Object.is(value, -0)) w.tag(field, WireType.Bit64).double(value)
}

function writeString(w: BinaryWriter, field: number, value: string): void {
  if (value !== '') writeRepeatedString(w, field, value)
}

function writeInference(w: BinaryWriter, i: InferenceFields): void {
  if (i.eventId !== '') w.tag(1, WireType.LengthDelimited).string(i.eventId)
  writeString(w, 2, i.deviceId)
  if (i.ts) writeTimestamp(w, 3, i.ts as Timestamp)
  writeDouble(w, 4, i.score)
  writeString(w, 5, i.label)
  for (const a of i.anomalies) {
    w.tag(6, WireType.LengthDelimited).fork()
    writeString(w, 1, a.name)
    writeString(w, 2, a.severity)
    writeDouble(w, 3, a.ratio)
    w.join()
  }
  if (i.explain) {
    const e = i.explain
    w.tag(7, WireType.LengthDelimited).fork()
    for (const c of e.shapTop) {
      w.tag(1, WireType.LengthDelimited).fork()
      writeString(w, 1, c.name)
      writeDouble(w, 2, c.contribution)
      writeDouble(w, 3, c.value)
      w.join()
    }
    writeDouble(w, 2, e.spe)
    writeDouble(w, 3, e.speLimit)
    writeDouble(w, 4, e.t2)
    writeDouble(w, 5, e.t2Limit)
    w.join()
  }
  if (i.model) {
    w.tag(8, WireType.LengthDelimited).fork()
    writeString(w, 1, i.model.name)
    if (i.model.version !== 0) w.tag(2, WireType.Varint).uint32(i.model.version)
    w.join()
  }
  if (i.inferredAt) writeTimestamp(w, 9, i.inferredAt as Timestamp)
  for (const name in i.features) {
    w.tag(10, WireType.LengthDelimited).fork()
    writeRepeatedString(w, 1, name)
    w.tag(2, WireType.Bit64).double(i.features[name]!)
    w.join()
  }
}

/** `toBinary(InferenceBatchSchema, {batchId, inferences})`, without reflection. */
export function encodeInferenceBatch(batchId: string, inferences: InferenceFields[]): Uint8Array {
  const w = new BinaryWriter()
  if (batchId !== '') w.tag(1, WireType.LengthDelimited).string(batchId)
  for (const i of inferences) {
    w.tag(2, WireType.LengthDelimited).fork()
    writeInference(w, i)
    w.join()
  }
  return w.finish()
}
