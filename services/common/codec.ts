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
const EMPTY = new Uint8Array(0)

function writeRepeatedString(w: BinaryWriter, field: number, text: string): void {
  w.tag(field, WireType.LengthDelimited).bytes(cachedUtf8(text))
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

/** What the async scorer needs of a reading; the event id and `ts` stay encoded (copied into the inference). */
export interface ScoringReading {
  /** UTF-8 bytes of the event id. */
  eventIdBytes: Uint8Array
  deviceId: string
  site: string | undefined
  sensors: Record<string, number>
  /** The encoded google.protobuf.Timestamp of field 3, when present. */
  tsBytes: Uint8Array | undefined
}

/**
 * Strings made from byte ranges, remembered by their bytes (FNV-1a, then a byte comparison), for
 * text that repeats from message to message (device ids, sensor names, sites): a hit makes no new
 * string. Ranges over 128 bytes are not kept. Bounded; cleared when full.
 */
export class ByteStringCache {
  private readonly buckets = new Map<number, { bytes: Uint8Array; text: string }[]>()
  private size = 0

  constructor(
    private readonly make: (buf: Uint8Array, start: number, end: number) => string,
    private readonly max = 50_000,
  ) {}

  get(buf: Uint8Array, start: number, end: number): string {
    const n = end - start
    if (n > 128) return this.make(buf, start, end)
    let h = 0x811c9dc5
    for (let k = start; k < end; k++) h = Math.imul(h ^ (buf[k] as number), 0x01000193)
    const bucket = this.buckets.get(h)
    if (bucket) {
      outer: for (const e of bucket) {
        if (e.bytes.length !== n) continue
        for (let k = 0; k < n; k++) if (e.bytes[k] !== buf[start + k]) continue outer
        return e.text
      }
    }
    if (this.size >= this.max) {
      this.buckets.clear()
      this.size = 0
    }
    const entry = { bytes: buf.slice(start, end), text: this.make(buf, start, end) }
    if (bucket) bucket.push(entry)
    else this.buckets.set(h, [entry])
    this.size++
    return entry.text
  }
}

const textDecoder = new TextDecoder()
const strings = new ByteStringCache((buf, start, end) => textDecoder.decode(buf.subarray(start, end)))

/** Reads a length-delimited string through the cache. */
function readCachedString(r: BinaryReader, buf: Uint8Array): string {
  const len = r.uint32()
  const start = r.pos
  r.pos += len
  if (r.pos > r.len) throw new Error('premature end of a string')
  return strings.get(buf, start, r.pos)
}

/**
 * A ReadingBatch decoded for scoring only: ids, site, sensors and the timestamp's bytes; `seq`,
 * `received_at` and other meta are skipped (no objects made for them).
 */
export function decodeForScoring(bytes: Uint8Array): { batchId: string; readings: ScoringReading[] } {
  const r = new BinaryReader(bytes)
  const cached = (reader: BinaryReader) => readCachedString(reader, bytes)
  let batchId = ''
  const readings: ScoringReading[] = []
  while (r.pos < r.len) {
    const [no, wt] = r.tag()
    if (no === 2 && wt === WireType.LengthDelimited) {
      const end = r.uint32() + r.pos
      if (end > r.len) throw new Error('premature end of a ReadingBatch')
      const reading: ScoringReading = {
        eventIdBytes: EMPTY,
        deviceId: '',
        site: undefined,
        sensors: {},
        tsBytes: undefined,
      }
      while (r.pos < end) {
        const [fno, fwt] = r.tag()
        if (fwt !== WireType.LengthDelimited) r.skip(fwt, fno)
        else if (fno === 1) reading.eventIdBytes = r.bytes()
        else if (fno === 2) reading.deviceId = cached(r)
        else if (fno === 3) reading.tsBytes = r.bytes()
        else if (fno === 4) {
          const [k, v] = readEntry(r, readDouble, 0, cached)
          reading.sensors[k] = v
        } else if (fno === 5) {
          const [k, v] = readEntry(r, cached, '', cached)
          if (k === 'site') reading.site = v
        } else r.skip(fwt, fno)
      }
      if (r.pos !== end) throw new Error('a Reading ends past its length')
      readings.push(reading)
    } else if (no === 1 && wt === WireType.LengthDelimited) batchId = r.string()
    else r.skip(wt, no)
  }
  return { batchId, readings }
}

/** An Inference as the encoder takes it: the message's fields, without the message type. */
export type InferenceFields = Omit<
  Inference,
  '$typeName' | 'anomalies' | 'explain' | 'model' | 'ts' | 'inferredAt'
> & {
  ts?: Pick<Timestamp, 'seconds' | 'nanos'>
  /** The timestamp already encoded (from decodeForScoring); used instead of `ts`. */
  tsBytes?: Uint8Array
  /** The event id already encoded (from decodeForScoring); used instead of `eventId`. */
  eventIdBytes?: Uint8Array
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

// The async inference workers encode every inference once; fork/join of BinaryWriter (a buffer per
// nested message) dominated that. This encoder computes each nested message's size first and
// writes everything into one buffer. Bytes are the same as `toBinary` (checked by the tests).

const MAX_EXACT = BigInt(Number.MAX_SAFE_INTEGER)

/** UTF-8 bytes of a string that repeats (names, labels, device ids): encoded once, then reused. */
function cachedUtf8(value: string): Uint8Array {
  let bytes = utf8.get(value)
  if (bytes === undefined) {
    if (utf8.size >= 20_000) utf8.clear()
    bytes = encoder.encode(value)
    utf8.set(value, bytes)
  }
  return bytes
}

function varintSize(n: number): number {
  return n < 0x80 ? 1 : n < 0x4000 ? 2 : n < 0x200000 ? 3 : n < 0x10000000 ? 4 : 5
}

/** Size of an int64 varint: negative values take ten bytes (two's complement). */
function int64Size(v: bigint | number): number {
  if (v < 0) return 10
  if (typeof v === 'number' || v <= MAX_EXACT) {
    let n = Number(v)
    let size = 1
    while (n >= 0x80) {
      n = Math.floor(n / 0x80)
      size++
    }
    return size
  }
  let size = 1
  while (v >= 0x80n) {
    v >>= 7n
    size++
  }
  return size
}

/** A string's UTF-8 bytes; ASCII (event ids, almost always) without a TextEncoder call. */
function utf8Of(value: string): Uint8Array {
  const n = value.length
  if (n > 256) return encoder.encode(value)
  const out = new Uint8Array(n)
  for (let k = 0; k < n; k++) {
    const c = value.charCodeAt(k)
    if (c > 0x7f) return encoder.encode(value)
    out[k] = c
  }
  return out
}

class Out {
  buf: Uint8Array
  view: DataView
  pos = 0
  constructor(size: number) {
    this.buf = new Uint8Array(size)
    this.view = new DataView(this.buf.buffer)
  }
  ensure(extra: number): void {
    if (this.pos + extra <= this.buf.length) return
    const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.pos + extra))
    bigger.set(this.buf.subarray(0, this.pos))
    this.buf = bigger
    this.view = new DataView(bigger.buffer)
  }
  varint(n: number): void {
    const buf = this.buf
    while (n >= 0x80) {
      buf[this.pos++] = (n & 0x7f) | 0x80
      n >>>= 7
    }
    buf[this.pos++] = n
  }
  int64(v: bigint): void {
    if (v >= 0n && v <= MAX_EXACT) {
      let n = Number(v)
      while (n >= 0x80) {
        this.buf[this.pos++] = (n % 0x80) | 0x80
        n = Math.floor(n / 0x80)
      }
      this.buf[this.pos++] = n
      return
    }
    let u = BigInt.asUintN(64, v)
    while (u >= 0x80n) {
      this.buf[this.pos++] = Number(u & 0x7fn) | 0x80
      u >>= 7n
    }
    this.buf[this.pos++] = Number(u)
  }
  double(field: number, value: number): void {
    this.buf[this.pos++] = (field << 3) | 1
    this.view.setFloat64(this.pos, value, true)
    this.pos += 8
  }
  bytes(field: number, value: Uint8Array): void {
    this.buf[this.pos++] = (field << 3) | 2
    this.varint(value.length)
    this.buf.set(value, this.pos)
    this.pos += value.length
  }
  head(field: number, size: number): void {
    this.buf[this.pos++] = (field << 3) | 2
    this.varint(size)
  }
}

const hasDouble = (v: number) => v !== 0 || Object.is(v, -0)
const doubleSize = (v: number) => (hasDouble(v) ? 9 : 0)
const bytesSize = (b: Uint8Array) => (b.length === 0 ? 0 : 1 + varintSize(b.length) + b.length)
const nested = (size: number) => 1 + varintSize(size) + size

function timestampSize(ts: Pick<Timestamp, 'seconds' | 'nanos'>): number {
  return (ts.seconds !== 0n ? 1 + int64Size(ts.seconds) : 0) + (ts.nanos !== 0 ? 1 + int64Size(ts.nanos) : 0)
}

function putTimestamp(out: Out, field: number, ts: Pick<Timestamp, 'seconds' | 'nanos'>): void {
  out.head(field, timestampSize(ts))
  if (ts.seconds !== 0n) {
    out.buf[out.pos++] = 1 << 3
    out.int64(ts.seconds)
  }
  if (ts.nanos !== 0) {
    out.buf[out.pos++] = 2 << 3
    out.int64(BigInt(ts.nanos))
  }
}

function putDouble(out: Out, field: number, v: number): void {
  if (hasDouble(v)) out.double(field, v)
}

function putBytes(out: Out, field: number, b: Uint8Array): void {
  if (b.length > 0) out.bytes(field, b)
}

/** An Alert (the inference that raised it and its label) for `alerts.<deviceId>`. */
export function encodeAlert(i: InferenceFields): Uint8Array {
  const label = cachedUtf8(i.label)
  const out = new Out(512 + bytesSize(label))
  encodeInference(out, i, 1)
  out.ensure(bytesSize(label))
  putBytes(out, 2, label)
  return out.buf.slice(0, out.pos)
}

/** One Inference as the length-delimited field `field` (2 in an InferenceBatch, 1 in an Alert). */
function encodeInference(out: Out, i: InferenceFields, field = 2): void {
  const eventId = i.eventIdBytes ?? (i.eventId === '' ? EMPTY : utf8Of(i.eventId))
  const deviceId = cachedUtf8(i.deviceId)
  const label = cachedUtf8(i.label)
  let size = bytesSize(eventId) + bytesSize(deviceId) + doubleSize(i.score) + bytesSize(label)
  if (i.tsBytes) size += nested(i.tsBytes.length)
  else if (i.ts) size += nested(timestampSize(i.ts))
  const anomalySizes: number[] = []
  for (const a of i.anomalies) {
    const n = bytesSize(cachedUtf8(a.name)) + bytesSize(cachedUtf8(a.severity)) + doubleSize(a.ratio)
    anomalySizes.push(n)
    size += nested(n)
  }
  let explainSize = 0
  const shapSizes: number[] = []
  if (i.explain) {
    const e = i.explain
    for (const c of e.shapTop) {
      const n = bytesSize(cachedUtf8(c.name)) + doubleSize(c.contribution) + doubleSize(c.value)
      shapSizes.push(n)
      explainSize += nested(n)
    }
    explainSize += doubleSize(e.spe) + doubleSize(e.speLimit) + doubleSize(e.t2) + doubleSize(e.t2Limit)
    size += nested(explainSize)
  }
  let modelSize = 0
  if (i.model) {
    modelSize =
      bytesSize(cachedUtf8(i.model.name)) + (i.model.version !== 0 ? 1 + varintSize(i.model.version) : 0)
    size += nested(modelSize)
  }
  if (i.inferredAt) size += nested(timestampSize(i.inferredAt))
  const names = Object.keys(i.features)
  for (const name of names) size += nested(bytesSize(cachedUtf8(name)) + 9)

  out.ensure(nested(size))
  out.head(field, size)
  putBytes(out, 1, eventId)
  putBytes(out, 2, deviceId)
  if (i.tsBytes) {
    out.head(3, i.tsBytes.length)
    out.buf.set(i.tsBytes, out.pos)
    out.pos += i.tsBytes.length
  } else if (i.ts) putTimestamp(out, 3, i.ts)
  putDouble(out, 4, i.score)
  putBytes(out, 5, label)
  i.anomalies.forEach((a, k) => {
    out.head(6, anomalySizes[k] as number)
    putBytes(out, 1, cachedUtf8(a.name))
    putBytes(out, 2, cachedUtf8(a.severity))
    putDouble(out, 3, a.ratio)
  })
  if (i.explain) {
    const e = i.explain
    out.head(7, explainSize)
    e.shapTop.forEach((c, k) => {
      out.head(1, shapSizes[k] as number)
      putBytes(out, 1, cachedUtf8(c.name))
      putDouble(out, 2, c.contribution)
      putDouble(out, 3, c.value)
    })
    putDouble(out, 2, e.spe)
    putDouble(out, 3, e.speLimit)
    putDouble(out, 4, e.t2)
    putDouble(out, 5, e.t2Limit)
  }
  if (i.model) {
    out.head(8, modelSize)
    putBytes(out, 1, cachedUtf8(i.model.name))
    if (i.model.version !== 0) {
      out.buf[out.pos++] = 2 << 3
      out.varint(i.model.version)
    }
  }
  if (i.inferredAt) putTimestamp(out, 9, i.inferredAt)
  for (const name of names) {
    const key = cachedUtf8(name)
    out.head(10, bytesSize(key) + 9)
    putBytes(out, 1, key)
    out.double(2, i.features[name] as number)
  }
}

/** `toBinary(InferenceBatchSchema, {batchId, inferences})`, without reflection. */
export function encodeInferenceBatch(batchId: string, inferences: InferenceFields[]): Uint8Array {
  const out = new Out(256 + inferences.length * 400)
  if (batchId !== '') {
    const id = encoder.encode(batchId)
    out.ensure(nested(id.length))
    out.bytes(1, id)
  }
  for (const i of inferences) encodeInference(out, i)
  return out.buf.slice(0, out.pos)
}
