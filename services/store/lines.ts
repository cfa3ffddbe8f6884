import { WireType } from '@bufbuild/protobuf/wire'
import { toDateTime64 } from '../common/clickhouse.js'
import { ByteStringCache, Wire } from '../common/wire.js'

// The store writes every reading and every inference once, and on this 2-core machine the
// JavaScript it spends per row is taken from ClickHouse's inserts running beside it. Decoding a
// batch into objects, making a row object of each item and JSON.stringify-ing it cost ~6 µs a
// reading (measured) and most of the store's garbage; this writes the same JSONEachRow text straight
// from the Protobuf bytes, without the objects. Field numbers follow proto/vigil/telemetry/v1; the
// tests check the lines equal
// `JSON.stringify(telemetryRow(fromBinary(…)))` (and the inference's) for awkward and random input.

const utf8 = new TextDecoder()

// Device ids, sensor names and meta values repeat from row to row: their JSON text (quoted and
// escaped) is remembered by their bytes.
const quoted = new ByteStringCache((buf, start, end) => jsonString(buf, start, end))

/** The JSON string literal of UTF-8 bytes `buf[start, end)`. */
function jsonString(buf: Uint8Array, start: number, end: number): string {
  for (let k = start; k < end; k++) {
    const b = buf[k] as number
    // Anything but printable ASCII without `"` and `\` goes through the full escaper.
    if (b < 0x20 || b > 0x7e || b === 0x22 || b === 0x5c)
      return JSON.stringify(utf8.decode(buf.subarray(start, end)))
  }
  return `"${String.fromCharCode.apply(null, buf.subarray(start, end) as unknown as number[])}"`
}

/** A length-delimited string as its JSON literal; `cache` for text that repeats. */
function readJsonString(w: Wire, cache: boolean): string {
  const end = w.end()
  const start = w.pos
  w.pos = end
  return cache ? quoted.get(w.buf, start, end) : jsonString(w.buf, start, end)
}

// `YYYY-MM-DD hh:mm:ss` of the last second formatted: readings of a batch share their seconds.
let lastSecond = Number.NaN
let lastPrefix = ''

/** A google.protobuf.Timestamp's fields; a second occurrence of the field merges into the first. */
interface Time {
  seconds: number
  nanos: number
}

const time = (): Time => ({ seconds: 0, nanos: 0 })

/** Reads a google.protobuf.Timestamp into `t`, field by field, as Protobuf merges messages. */
function readTime(w: Wire, t: Time): void {
  const end = w.end()
  while (w.pos < end) {
    const no = w.field()
    const wt = w.wireType
    if (no === 1 && wt === WireType.Varint) t.seconds = w.signed()
    else if (no === 2 && wt === WireType.Varint) t.nanos = w.signed() | 0
    else w.skip(wt)
  }
  if (w.pos !== end) throw new Error('a Timestamp ends past its length')
}

/** A Timestamp as the JSON literal `toDateTime64` gives (milliseconds, UTC). */
function dateTime64Json({ seconds, nanos }: Time): string {
  const ms = seconds * 1000 + Math.floor(nanos / 1e6)
  const second = Math.floor(ms / 1000)
  // Years 1970–2100 by the cached prefix; anything else exactly as toDateTime64 writes it.
  if (second < 0 || second >= 4_102_444_800) return `"${toDateTime64(ms)}"`
  if (second !== lastSecond) {
    lastSecond = second
    lastPrefix = toDateTime64(second * 1000).slice(0, 19)
  }
  const frac = ms - second * 1000
  return `"${lastPrefix}.${frac < 10 ? '00' : frac < 100 ? '0' : ''}${frac}"`
}

/** A JSON number as JSON.stringify writes it (non-finite numbers become null). */
const jsonNumber = (v: number) => (Number.isFinite(v) ? String(v) : 'null')

/**
 * A map<string, double> or map<string, string> entry into `keys`/`values` (JSON literals). A key
 * seen before replaces its value, as Protobuf's decoding of a map does.
 */
function readEntry(w: Wire, keys: string[], values: string[], numbers: boolean): void {
  const end = w.end()
  let key = '""'
  let value = numbers ? '0' : '""'
  while (w.pos < end) {
    const no = w.field()
    const wt = w.wireType
    if (no === 1 && wt === WireType.LengthDelimited) key = readJsonString(w, true)
    else if (no === 2 && numbers && wt === WireType.Bit64) value = jsonNumber(w.double())
    else if (no === 2 && !numbers && wt === WireType.LengthDelimited) value = readJsonString(w, true)
    else w.skip(wt)
  }
  if (w.pos !== end) throw new Error('a map entry ends past its length')
  const at = keys.indexOf(key)
  if (at >= 0) values[at] = value
  else {
    keys.push(key)
    values.push(value)
  }
}

function jsonObject(keys: string[], values: string[]): string {
  let out = '{'
  for (let k = 0; k < keys.length; k++) out += `${k === 0 ? '' : ','}${keys[k]}:${values[k]}`
  return `${out}}`
}

/** One Reading (its bytes up to `end`) as a `telemetry` row in JSON. */
function readingLine(w: Wire, end: number): string {
  let eventId = '""'
  let deviceId = '""'
  const ts = time()
  const receivedAt = time()
  let seq = '0'
  const sensorKeys: string[] = []
  const sensorValues: string[] = []
  const metaKeys: string[] = []
  const metaValues: string[] = []
  while (w.pos < end) {
    const no = w.field()
    const wt = w.wireType
    if (wt === WireType.LengthDelimited) {
      if (no === 1) eventId = readJsonString(w, false)
      else if (no === 2) deviceId = readJsonString(w, true)
      else if (no === 3) readTime(w, ts)
      else if (no === 4) readEntry(w, sensorKeys, sensorValues, true)
      else if (no === 5) readEntry(w, metaKeys, metaValues, false)
      else if (no === 7) readTime(w, receivedAt)
      else w.skip(wt)
    } else if (no === 6 && wt === WireType.Varint) seq = String(w.varint64())
    else w.skip(wt)
  }
  if (w.pos !== end) throw new Error('a Reading ends past its length')
  return (
    `{"device_id":${deviceId},"ts":${dateTime64Json(ts)},"event_id":${eventId},` +
    `"sensors":${jsonObject(sensorKeys, sensorValues)},"meta":${jsonObject(metaKeys, metaValues)},` +
    `"seq":"${seq}","received_at":${dateTime64Json(receivedAt)}}\n`
  )
}

/** A batch (ReadingBatch, InferenceBatch: id in field 1, items in field 2) as JSONEachRow lines. */
function batchLines(
  bytes: Uint8Array,
  line: (w: Wire, end: number) => string,
): { batchId: string; rows: number; text: string } {
  const w = new Wire(bytes)
  let batchId = ''
  let rows = 0
  let text = ''
  while (w.pos < bytes.length) {
    const no = w.field()
    const wt = w.wireType
    if (no === 2 && wt === WireType.LengthDelimited) {
      const end = w.end()
      text += line(w, end)
      rows++
    } else if (no === 1 && wt === WireType.LengthDelimited) {
      const end = w.end()
      batchId = utf8.decode(bytes.subarray(w.pos, end))
      w.pos = end
    } else w.skip(wt)
  }
  return { batchId, rows, text }
}

/**
 * A ReadingBatch's readings as `telemetry` rows in JSONEachRow, one line each, straight from the
 * bytes; its batch id and the number of rows. Unknown fields are skipped; malformed input throws.
 */
export function telemetryLines(bytes: Uint8Array): { batchId: string; rows: number; text: string } {
  return batchLines(bytes, readingLine)
}

/** An InferenceBatch's inferences as `inferences` rows, as `telemetryLines` does for readings. */
export function inferenceLines(bytes: Uint8Array): { batchId: string; rows: number; text: string } {
  return batchLines(bytes, inferenceLine)
}

/** Reads an Anomaly (name 1, severity 2; ratio is not stored) onto the two lists. */
function readAnomaly(w: Wire, names: string[], severities: string[]): void {
  const end = w.end()
  let name = '""'
  let severity = '""'
  while (w.pos < end) {
    const no = w.field()
    const wt = w.wireType
    if (no === 1 && wt === WireType.LengthDelimited) name = readJsonString(w, true)
    else if (no === 2 && wt === WireType.LengthDelimited) severity = readJsonString(w, true)
    else w.skip(wt)
  }
  if (w.pos !== end) throw new Error('an Anomaly ends past its length')
  names.push(name)
  severities.push(severity)
}

/** An Explanation's stored fields; a second occurrence merges (lists append, numbers replace). */
interface Explain {
  names: string[]
  contributions: string[]
  spe: string
  speLimit: string
  t2: string
  t2Limit: string
}

function readExplain(w: Wire, e: Explain): void {
  const end = w.end()
  while (w.pos < end) {
    const no = w.field()
    const wt = w.wireType
    if (no === 1 && wt === WireType.LengthDelimited) {
      // A FeatureContribution: name 1, contribution 2 (value 3 is not stored).
      const fend = w.end()
      let name = '""'
      let contribution = '0'
      while (w.pos < fend) {
        const fno = w.field()
        const fwt = w.wireType
        if (fno === 1 && fwt === WireType.LengthDelimited) name = readJsonString(w, true)
        else if (fno === 2 && fwt === WireType.Bit64) contribution = jsonNumber(w.double())
        else w.skip(fwt)
      }
      if (w.pos !== fend) throw new Error('a FeatureContribution ends past its length')
      e.names.push(name)
      e.contributions.push(contribution)
    } else if (wt === WireType.Bit64 && no >= 2 && no <= 5) {
      const v = jsonNumber(w.double())
      if (no === 2) e.spe = v
      else if (no === 3) e.speLimit = v
      else if (no === 4) e.t2 = v
      else e.t2Limit = v
    } else w.skip(wt)
  }
  if (w.pos !== end) throw new Error('an Explanation ends past its length')
}

/** One Inference (its bytes up to `end`) as an `inferences` row in JSON. */
function inferenceLine(w: Wire, end: number): string {
  let eventId = '""'
  let deviceId = '""'
  let score = '0'
  let label = '""'
  let modelName = '""'
  let modelVersion = 0
  const ts = time()
  const inferredAt = time()
  const anomalyNames: string[] = []
  const anomalySeverities: string[] = []
  const explain: Explain = { names: [], contributions: [], spe: '0', speLimit: '0', t2: '0', t2Limit: '0' }
  const featureKeys: string[] = []
  const featureValues: string[] = []
  while (w.pos < end) {
    const no = w.field()
    const wt = w.wireType
    if (wt === WireType.LengthDelimited) {
      if (no === 1) eventId = readJsonString(w, false)
      else if (no === 2) deviceId = readJsonString(w, true)
      else if (no === 3) readTime(w, ts)
      else if (no === 5) label = readJsonString(w, true)
      else if (no === 6) readAnomaly(w, anomalyNames, anomalySeverities)
      else if (no === 7) readExplain(w, explain)
      else if (no === 8) {
        const mend = w.end()
        while (w.pos < mend) {
          const mno = w.field()
          const mwt = w.wireType
          if (mno === 1 && mwt === WireType.LengthDelimited) modelName = readJsonString(w, true)
          else if (mno === 2 && mwt === WireType.Varint) modelVersion = w.signed() >>> 0
          else w.skip(mwt)
        }
        if (w.pos !== mend) throw new Error('a ModelRef ends past its length')
      } else if (no === 9) readTime(w, inferredAt)
      else if (no === 10) readEntry(w, featureKeys, featureValues, true)
      else w.skip(wt)
    } else if (no === 4 && wt === WireType.Bit64) score = jsonNumber(w.double())
    else w.skip(wt)
  }
  if (w.pos !== end) throw new Error('an Inference ends past its length')
  return (
    `{"device_id":${deviceId},"ts":${dateTime64Json(ts)},"event_id":${eventId},"score":${score},` +
    `"label":${label},"anomaly_names":[${anomalyNames.join(',')}],` +
    `"anomaly_severities":[${anomalySeverities.join(',')}],"explain_names":[${explain.names.join(',')}],` +
    `"explain_contributions":[${explain.contributions.join(',')}],"spe":${explain.spe},` +
    `"spe_limit":${explain.speLimit},"t2":${explain.t2},"t2_limit":${explain.t2Limit},` +
    `"model_name":${modelName},"model_version":${modelVersion},` +
    `"features":${jsonObject(featureKeys, featureValues)},"inferred_at":${dateTime64Json(inferredAt)}}\n`
  )
}
