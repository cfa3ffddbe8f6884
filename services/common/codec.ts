import { BinaryReader, WireType } from '@bufbuild/protobuf/wire'
import type { Timestamp } from '@bufbuild/protobuf/wkt'
import type { Reading } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { WireOut } from './wire.js'

// The hot path of the bridge and ingest encodes every reading once. protobuf-es's `toBinary` walks
// the schema by reflection for each field; this writes the same bytes directly (the tests check
// byte-for-byte equality with `toBinary`). Field numbers follow proto/vigil/telemetry/v1.

// Sensor names, meta values and device ids repeat from reading to reading: keep their UTF-8 bytes
// rather than encoding the same text again each time. Bounded; cleared when full.
const utf8 = new Map<string, Uint8Array>()
const encoder = new TextEncoder()

/** UTF-8 bytes of a string that repeats (names, device ids): encoded once, then reused. */
function cachedUtf8(value: string): Uint8Array {
  let bytes = utf8.get(value)
  if (bytes === undefined) {
    if (utf8.size >= 20_000) utf8.clear()
    bytes = encoder.encode(value)
    utf8.set(value, bytes)
  }
  return bytes
}

/** Where every batch is written (then copied out): one buffer, grown as needed. */
const batchOut = new WireOut(1 << 16)

/** `toBinary(ReadingBatchSchema, {batchId, readings, source})`, without reflection. */
export function encodeReadingBatch(batchId: string, readings: Reading[], source: string): Uint8Array {
  const out = batchOut.reset()
  out.ensure(8 + 3 * batchId.length)
  out.string(1, batchId)
  for (const r of readings) {
    out.ensure(24 + 3 * r.eventId.length)
    const reading = out.open()
    out.string(1, r.eventId)
    if (r.deviceId !== '') {
      const id = cachedUtf8(r.deviceId)
      out.ensure(8 + id.length)
      out.bytes(2, id)
    }
    if (r.ts) out.timestamp(3, r.ts.seconds, r.ts.nanos)
    for (const name in r.sensors) {
      const key = cachedUtf8(name)
      out.ensure(key.length + 24)
      const entry = out.open()
      out.message(1, key, 0, key.length)
      out.fixedDouble(2, r.sensors[name] as number)
      out.close(4, entry)
    }
    for (const name in r.meta) {
      const key = cachedUtf8(name)
      const value = cachedUtf8(r.meta[name] as string)
      out.ensure(key.length + value.length + 24)
      const entry = out.open()
      out.message(1, key, 0, key.length)
      out.message(2, value, 0, value.length)
      out.close(5, entry)
    }
    out.ensure(32)
    if (r.seq !== 0n) out.int64(6, r.seq)
    if (r.receivedAt) out.timestamp(7, r.receivedAt.seconds, r.receivedAt.nanos)
    out.close(2, reading)
  }
  out.ensure(8 + 3 * source.length)
  out.string(3, source)
  return out.result()
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

/** One map entry (key 1, value 2); fields it does not know are skipped, as Protobuf requires. */
function readEntry<V>(
  r: BinaryReader,
  value: (r: BinaryReader) => V,
  zero: V,
  key: (r: BinaryReader) => string = readString,
): [string, V] {
  const end = r.uint32() + r.pos
  let k = ''
  let v = zero
  while (r.pos < end) {
    const [no, wt] = r.tag()
    if (no === 1 && wt === WireType.LengthDelimited) k = key(r)
    else if (no === 2) v = value(r)
    else r.skip(wt, no)
  }
  return [k, v]
}

const readDouble = (r: BinaryReader) => r.double()
const readString = (r: BinaryReader) => r.string()

/** A Reading with every field at its zero value, as protobuf-es's create() makes it, without its walk over the schema. */
export function emptyReading(): Reading {
  return {
    $typeName: 'vigil.telemetry.v1.Reading',
    eventId: '',
    deviceId: '',
    sensors: {},
    meta: {},
    seq: 0n,
  }
}

function readReading(r: BinaryReader, end: number): Reading {
  const reading = emptyReading()
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
