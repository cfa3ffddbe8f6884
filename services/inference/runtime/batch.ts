// Scores one ReadingBatch from its bytes to the bytes of its InferenceBatch: scan, route each
// reading to its model, one run per model (or per bank), interpret, encode. Runs inside a scoring
// thread (so the service's event loop only moves bytes); pure apart from `run`, so it is tested
// without threads.
//
// Every reading on the bus passes here, so it works on the bytes: the batch is scanned once into
// byte ranges (event id, device id, timestamp, each sensor entry) and the few strings routing needs;
// each inference is written straight from the graph's outputs, copying those ranges — the features
// map is the reading's sensor entries as they came, under the Inference's field number. No Reading
// or Inference objects are made. The tests hold the result to protobuf-es decoding and encoding of
// the same batch. Field numbers follow proto/vigil/telemetry/v1.
import { WireType } from '@bufbuild/protobuf/wire'
import { ByteStringCache, Wire, WireOut } from '../../common/wire.js'
import {
  ANOMALY_RATIO,
  anomalyRatio,
  EXPLAIN_TOP,
  type Interpretation,
  labelOf,
  type ModelSpec,
  type ScoreOutputs,
  severityOf,
  topContributions,
} from '../model/spec.js'
import type { RouteCache } from '../routing.js'
import type { ModelBank } from './bank.js'

export interface RunnableModel {
  spec: ModelSpec
  run: (values: Float64Array, rows: number) => Promise<ScoreOutputs>
  /** The bank that also holds the model, under the same key (for batches with many models). */
  bank?: ModelBank
}

export interface BatchOutcome {
  /** The InferenceBatch to publish (null when nothing could be scored). */
  bytes: Uint8Array | null
  batchId: string
  labels: Record<'OK' | 'WARN' | 'ALERT', number>
  /** Readings lacking a feature their model needs (not scored, counted). */
  missing: number
  /** Readings no model applies to (the batch must be retried later). */
  noModel: number
  scores: Float64Array
  /** An Alert per WARN or ALERT reading, for `alerts.<deviceId>`. */
  alerts: { deviceId: string; bytes: Uint8Array }[]
}

/** Thrown for bytes that are not a ReadingBatch (the message is poison). */
export class UndecodableBatchError extends Error {
  override name = 'UndecodableBatchError'
}

/** The fields an Inference shares with an InferResponse. */
export function inferenceFields(spec: ModelSpec, result: Interpretation) {
  return {
    score: result.score,
    label: result.label,
    anomalies: result.anomalies,
    explain: result.explain,
    model: { name: spec.name, version: spec.version },
  }
}

const utf8 = new TextDecoder()
const encoder = new TextEncoder()
const strings = new ByteStringCache((buf, start, end) => utf8.decode(buf.subarray(start, end)))
const SITE = encoder.encode('site')

/** A ReadingBatch as byte ranges into its bytes; reading i's sensor entries are `first[i]`… */
class Scan {
  batchId = ''
  evStart: number[] = []
  evEnd: number[] = []
  devStart: number[] = []
  devEnd: number[] = []
  deviceIds: string[] = []
  sites: (string | undefined)[] = []
  /** The Timestamp's contents, -1 when the reading has none. */
  tsStart: number[] = []
  tsEnd: number[] = []
  first: number[] = []
  count: number[] = []
  /** Sensor entries: the entry message's contents, its key and its value. */
  entryStart: number[] = []
  entryEnd: number[] = []
  keys: string[] = []
  values: number[] = []
  /** The previous reading's sensor keys by position: readings of a batch mostly share them. */
  private readonly memo: { start: number; end: number; text: string }[] = []

  constructor(readonly data: Uint8Array) {
    const w = new Wire(data)
    while (w.pos < data.length) {
      const no = w.field()
      const wt = w.wireType
      if (wt !== WireType.LengthDelimited || (no !== 1 && no !== 2)) {
        w.skip(wt)
        continue
      }
      const end = w.end()
      if (no === 1) this.batchId = utf8.decode(data.subarray(w.pos, end))
      else this.reading(w, end)
      w.pos = end
    }
  }

  get readings(): number {
    return this.deviceIds.length
  }

  private reading(w: Wire, end: number): void {
    let ev0 = 0
    let ev1 = 0
    let dev0 = 0
    let dev1 = 0
    let ts0 = -1
    let ts1 = -1
    let site0 = -1
    let site1 = -1
    const first = this.keys.length
    while (w.pos < end) {
      const no = w.field()
      const wt = w.wireType
      if (wt !== WireType.LengthDelimited) {
        w.skip(wt)
        continue
      }
      const fieldEnd = w.end()
      if (fieldEnd > end) throw new Error('a field ends past its Reading')
      const start = w.pos
      if (no === 1) {
        ev0 = start
        ev1 = fieldEnd
      } else if (no === 2) {
        dev0 = start
        dev1 = fieldEnd
      } else if (no === 3) {
        ts0 = start
        ts1 = fieldEnd
      } else if (no === 4) this.sensor(w, fieldEnd, this.keys.length - first)
      else if (no === 5) {
        const meta = entryRanges(w, fieldEnd)
        if (sameBytes(this.data, meta[0], meta[1], SITE)) {
          site0 = meta[2]
          site1 = meta[3]
        }
      }
      w.pos = fieldEnd
    }
    if (w.pos !== end) throw new Error('a Reading ends past its length')
    this.evStart.push(ev0)
    this.evEnd.push(ev1)
    this.devStart.push(dev0)
    this.devEnd.push(dev1)
    this.deviceIds.push(strings.get(this.data, dev0, dev1))
    this.sites.push(site0 < 0 ? undefined : strings.get(this.data, site0, site1))
    this.tsStart.push(ts0)
    this.tsEnd.push(ts1)
    this.first.push(first)
    this.count.push(this.keys.length - first)
  }

  /** A map<string, double> entry (key 1, value 2; either may be absent). */
  private sensor(w: Wire, end: number, position: number): void {
    const start = w.pos
    let k0 = 0
    let k1 = 0
    let value = 0
    while (w.pos < end) {
      const no = w.field()
      const wt = w.wireType
      if (no === 1 && wt === WireType.LengthDelimited) {
        k1 = w.end()
        k0 = w.pos
        w.pos = k1
      } else if (no === 2 && wt === WireType.Bit64) value = w.double()
      else w.skip(wt)
    }
    if (w.pos !== end) throw new Error('a sensor entry ends past its length')
    this.entryStart.push(start)
    this.entryEnd.push(end)
    this.keys.push(this.key(position, k0, k1))
    this.values.push(value)
  }

  private key(position: number, start: number, end: number): string {
    const m = this.memo[position]
    if (m && sameBytes(this.data, start, end, this.data, m.start, m.end)) return m.text
    const text = strings.get(this.data, start, end)
    this.memo[position] = { start, end, text }
    return text
  }
}

/** Whether `a[a0, a1)` holds the bytes of `b[b0, b1)`. */
function sameBytes(a: Uint8Array, a0: number, a1: number, b: Uint8Array, b0 = 0, b1 = b.length): boolean {
  if (a1 - a0 !== b1 - b0) return false
  for (let k = 0; k < a1 - a0; k++) if (a[a0 + k] !== b[b0 + k]) return false
  return true
}

/** A map entry's key and value ranges (length-delimited fields 1 and 2; empty when absent). */
function entryRanges(w: Wire, end: number): [number, number, number, number] {
  let [k0, k1, v0, v1] = [0, 0, 0, 0]
  while (w.pos < end) {
    const no = w.field()
    const wt = w.wireType
    if ((no === 1 || no === 2) && wt === WireType.LengthDelimited) {
      const fieldEnd = w.end()
      if (no === 1) [k0, k1] = [w.pos, fieldEnd]
      else [v0, v1] = [w.pos, fieldEnd]
      w.pos = fieldEnd
    } else w.skip(wt)
  }
  if (w.pos !== end) throw new Error('a map entry ends past its length')
  return [k0, k1, v0, v1]
}

/** What a model's inferences share, encoded once per model. */
interface Encoded {
  columns: Map<string, number>
  names: Uint8Array[]
  /** Field 5 (label) of an Inference, and field 2 of an Alert, per label. */
  labels: Record<Interpretation['label'], Uint8Array>
  alertLabels: Record<Interpretation['label'], Uint8Array>
  /** Field 2 (severity) of an Anomaly, per severity. */
  severities: Record<'low' | 'medium' | 'high', Uint8Array>
  /** Field 8 (model). */
  model: Uint8Array
  /** Bytes an inference needs besides its ranges, at most. */
  room: number
}

const encodedSpecs = new WeakMap<ModelSpec, Encoded>()
/** Feature name → column, one map per feature list (device models share theirs). */
const columnsByFeatures = new Map<string, Map<string, number>>()

function field(no: number, text: string): Uint8Array {
  const out = new WireOut(16 + text.length * 3)
  out.string(no, text)
  return out.result()
}

function encodedOf(spec: ModelSpec): Encoded {
  let e = encodedSpecs.get(spec)
  if (e) return e
  const names = spec.features.map((name) => encoder.encode(name))
  const model = new WireOut(64 + spec.name.length * 3)
  const start = model.open()
  model.string(1, spec.name)
  if (spec.version !== 0) model.int64(2, spec.version)
  model.close(8, start)
  const list = spec.features.join('\n')
  let columns = columnsByFeatures.get(list)
  if (!columns) {
    if (columnsByFeatures.size >= 10_000) columnsByFeatures.clear()
    columns = new Map(spec.features.map((name, j) => [name, j]))
    columnsByFeatures.set(list, columns)
  }
  e = {
    columns,
    names,
    labels: { OK: field(5, 'OK'), WARN: field(5, 'WARN'), ALERT: field(5, 'ALERT') },
    alertLabels: { OK: field(2, 'OK'), WARN: field(2, 'WARN'), ALERT: field(2, 'ALERT') },
    severities: { low: field(2, 'low'), medium: field(2, 'medium'), high: field(2, 'high') },
    model: model.result(),
    room: 256 + model.pos + names.reduce((sum, n) => sum + 2 * (n.length + 40), 0),
  }
  encodedSpecs.set(spec, e)
  return e
}

/** Field 9 (inferred_at) of every inference of a batch. */
function inferredAtField(ms: number): Uint8Array {
  const out = new WireOut(32)
  const seconds = Math.floor(ms / 1000)
  out.timestamp(9, seconds, (ms - seconds * 1000) * 1_000_000)
  return out.result()
}

const top = new Int32Array(EXPLAIN_TOP)
/** Where every batch's inferences are written (then copied out): one buffer, grown as needed. */
const written = new WireOut(1 << 20)

export async function scoreReadingBatch(
  data: Uint8Array,
  fallbackId: string,
  inferredAtMs: number,
  routes: RouteCache<string>,
  models: Map<string, RunnableModel>,
): Promise<BatchOutcome> {
  let scan: Scan
  try {
    scan = new Scan(data)
  } catch (err) {
    throw new UndecodableBatchError(`not a ReadingBatch: ${(err as Error).message}`)
  }
  const n = scan.readings
  const outcome: BatchOutcome = {
    bytes: null,
    batchId: `inf-${scan.batchId || fallbackId}`,
    labels: { OK: 0, WARN: 0, ALERT: 0 },
    missing: 0,
    noModel: 0,
    scores: new Float64Array(0),
    alerts: [],
  }
  // Route each reading; note each sensor entry's column in its model (-1: not a feature of it).
  const groups = new Map<string, number[]>()
  const column = new Int32Array(scan.keys.length).fill(-1)
  const seen = new Int32Array(64)
  let stamp = 0
  const memo = {
    of: undefined as Map<string, number> | undefined,
    keys: [] as string[],
    cols: [] as number[],
  }
  // The model of the previous reading: a fleet or site model serves runs of readings.
  let current: { key: string; model: RunnableModel; columns: Map<string, number> } | undefined
  for (let i = 0; i < n; i++) {
    const key = routes.select(scan.deviceIds[i] as string, scan.sites[i])
    if (key !== current?.key) {
      const model = key === undefined ? undefined : models.get(key)
      current =
        model && key !== undefined ? { key, model, columns: encodedOf(model.spec).columns } : undefined
    }
    if (!current) {
      outcome.noModel++
      continue
    }
    const { key: modelKey, model, columns } = current
    const f = model.spec.features.length
    const marks = f <= seen.length ? seen : new Int32Array(f)
    stamp++
    let found = 0
    const first = scan.first[i] as number
    if (columns !== memo.of) {
      memo.of = columns
      memo.keys.length = 0
    }
    for (let e = first; e < first + (scan.count[i] as number); e++) {
      // Readings mostly list the same sensors in the same order: the previous reading's column at
      // this position, when the key is the same string.
      const p = e - first
      const k = scan.keys[e] as string
      let j: number
      if (memo.keys[p] === k) j = memo.cols[p] as number
      else {
        j = columns.get(k) ?? -1
        memo.keys[p] = k
        memo.cols[p] = j
      }
      if (j < 0) continue
      column[e] = j
      if (marks[j] !== stamp) {
        marks[j] = stamp
        found++
      }
    }
    if (found < f) {
      outcome.missing++
      continue
    }
    let group = groups.get(modelKey)
    if (!group) {
      group = []
      groups.set(modelKey, group)
    }
    group.push(i)
  }
  if (outcome.noModel > 0) return outcome

  // Run; remember each reading's run and row.
  const runOf = new Int32Array(n).fill(-1)
  const rowOf = new Int32Array(n)
  const specOf: ModelSpec[] = new Array(n)
  const encodedFor: Encoded[] = new Array(n)
  const outputs: { out: ScoreOutputs; values: Float64Array; f: number }[] = []
  for (const { models: members, run, features } of planRuns(groups, models)) {
    const f = features.length
    const rows = members.reduce((sum, m) => sum + m.indexes.length, 0)
    const values = new Float64Array(rows * f)
    let row = 0
    for (const { spec, indexes } of members) {
      const enc = encodedOf(spec)
      for (const i of indexes) {
        const first = scan.first[i] as number
        for (let e = first; e < first + (scan.count[i] as number); e++) {
          const j = column[e] as number
          if (j >= 0) values[row * f + j] = scan.values[e] as number
        }
        runOf[i] = outputs.length
        rowOf[i] = row
        specOf[i] = spec
        encodedFor[i] = enc
        row++
      }
    }
    outputs.push({ out: await run(values, rows), values, f })
  }

  // Write the inferences in the batch's order.
  const inferredAt = inferredAtField(inferredAtMs)
  const scores = new Float64Array(n)
  let scored = 0
  const out = written.reset()
  out.ensure(8 + 3 * outcome.batchId.length)
  out.string(1, outcome.batchId)
  for (let i = 0; i < n; i++) {
    const r = runOf[i] as number
    if (r < 0) continue
    const { out: o, values, f } = outputs[r] as (typeof outputs)[number]
    const row = rowOf[i] as number
    const spec = specOf[i] as ModelSpec
    const enc = encodedFor[i] as Encoded
    const first = scan.first[i] as number
    const last = first + (scan.count[i] as number)
    const ts0 = scan.tsStart[i] as number
    out.ensure(
      enc.room +
        inferredAt.length +
        ((scan.evEnd[i] as number) - (scan.evStart[i] as number)) +
        ((scan.devEnd[i] as number) - (scan.devStart[i] as number)) +
        (ts0 < 0 ? 0 : (scan.tsEnd[i] as number) - ts0 + 8) +
        ((scan.entryEnd[last - 1] ?? 0) - (scan.entryStart[first] ?? 0)) +
        8 * (last - first),
    )
    const at = out.pos
    const inference = out.open()
    out.bytes(1, data, scan.evStart[i], scan.evEnd[i])
    out.bytes(2, data, scan.devStart[i], scan.devEnd[i])
    if (ts0 >= 0) out.message(3, data, ts0, scan.tsEnd[i] as number)
    const score = o.score[row] as number
    const label = labelOf(spec, score)
    out.double(4, score)
    out.raw(enc.labels[label])
    if (label !== 'OK') {
      const named: { j: number; ratio: number }[] = []
      for (let j = 0; j < f; j++) {
        const ratio = anomalyRatio(spec, o.speParts, row, j, values[row * f + j] as number)
        if (ratio >= ANOMALY_RATIO) named.push({ j, ratio })
      }
      named.sort((a, b) => b.ratio - a.ratio)
      for (const { j, ratio } of named) {
        const anomaly = out.open()
        out.bytes(1, enc.names[j] as Uint8Array)
        out.raw(enc.severities[severityOf(ratio)])
        out.double(3, ratio)
        out.close(6, anomaly)
      }
    }
    const explain = out.open()
    const { count, total } = topContributions(o.contributions, row, f, top)
    for (let k = 0; k < count; k++) {
      const j = top[k] as number
      const contribution = out.open()
      out.bytes(1, enc.names[j] as Uint8Array)
      out.double(2, total > 0 ? (o.contributions[row * f + j] as number) / total : 0)
      out.double(3, values[row * f + j] as number)
      out.close(1, contribution)
    }
    out.double(2, o.spe[row] as number)
    out.double(3, spec.speLimit)
    out.double(4, o.t2[row] as number)
    out.double(5, spec.t2Limit)
    out.close(7, explain)
    out.raw(enc.model)
    out.raw(inferredAt)
    for (let e = first; e < last; e++)
      out.message(10, data, scan.entryStart[e] as number, scan.entryEnd[e] as number)
    out.close(2, inference)
    outcome.labels[label]++
    scores[scored++] = score
    if (label !== 'OK') {
      // An Alert: the same Inference as its field 1, then the label.
      const alertLabel = enc.alertLabels[label]
      const alert = new Uint8Array(out.pos - at + alertLabel.length)
      alert[0] = (1 << 3) | WireType.LengthDelimited
      alert.set(out.buf.subarray(at + 1, out.pos), 1)
      alert.set(alertLabel, out.pos - at)
      outcome.alerts.push({ deviceId: scan.deviceIds[i] as string, bytes: alert })
    }
  }
  outcome.scores = scores.slice(0, scored)
  if (scored > 0) outcome.bytes = out.result()
  return outcome
}

interface PlannedRun {
  /** The models scored in the run, each with its readings; rows follow this order. */
  models: { spec: ModelSpec; indexes: number[] }[]
  features: string[]
  run: (values: Float64Array, rows: number) => Promise<ScoreOutputs>
}

/**
 * One run per model, except that the models of one bank are scored together in one run of the
 * bank graph when the batch has readings of more than one of them.
 */
function planRuns(groups: Map<string, number[]>, models: Map<string, RunnableModel>): PlannedRun[] {
  const runs: PlannedRun[] = []
  const banked = new Map<ModelBank, { key: string; model: RunnableModel; indexes: number[] }[]>()
  for (const [key, indexes] of groups) {
    const model = models.get(key) as RunnableModel
    const slot = model.bank?.slotOf(key)
    if (model.bank && slot !== undefined) {
      const members = banked.get(model.bank) ?? []
      members.push({ key, model, indexes })
      banked.set(model.bank, members)
    } else
      runs.push({ models: [{ spec: model.spec, indexes }], features: model.spec.features, run: model.run })
  }
  for (const [bank, members] of banked) {
    const first = members[0] as (typeof members)[number]
    if (members.length === 1) {
      runs.push({
        models: [{ spec: first.model.spec, indexes: first.indexes }],
        features: first.model.spec.features,
        run: first.model.run,
      })
      continue
    }
    runs.push({
      models: members.map((m) => ({ spec: m.model.spec, indexes: m.indexes })),
      features: first.model.spec.features,
      run: (values, rows) => {
        const slots = new BigInt64Array(rows)
        let row = 0
        for (const m of members) {
          slots.fill(BigInt(bank.slotOf(m.key) as number), row, row + m.indexes.length)
          row += m.indexes.length
        }
        return bank.run(bank, values, slots, rows)
      },
    })
  }
  return runs
}
