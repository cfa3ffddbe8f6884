import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import {
  type Inference,
  InferenceBatchSchema,
  InferenceSchema,
  type Reading,
  ReadingBatchSchema,
  ReadingSchema,
} from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { toDateTime64 } from '../common/clickhouse.js'
import { inferenceLines, telemetryLines } from './lines.js'
import { ms, telemetryRow } from './rows.js'

/** What the writer inserted before: protobuf-es's decoding, the row object, JSON.stringify. */
function expectedLines(bytes: Uint8Array): string {
  return fromBinary(ReadingBatchSchema, bytes)
    .readings.map((r) => `${JSON.stringify(telemetryRow(r))}\n`)
    .join('')
}

function batchOf(readings: Reading[], batchId = 'b-1'): Uint8Array {
  return toBinary(ReadingBatchSchema, create(ReadingBatchSchema, { batchId, readings, source: 'test' }))
}

/**
 * Cuts the bytes at every length: where protobuf-es refuses the cut bytes so must `lines`; where
 * they still parse (a cut between fields), the lines are the same. Returns how many cuts were refused.
 */
function sameOnEveryCut(
  bytes: Uint8Array,
  expected: (bytes: Uint8Array) => string,
  lines: (bytes: Uint8Array) => { text: string },
): number {
  let refused = 0
  for (let cut = 1; cut < bytes.length; cut++) {
    const part = bytes.subarray(0, cut)
    let want: string
    try {
      want = expected(part)
    } catch {
      assert.throws(() => lines(part), `cut at ${cut} of ${bytes.length}`)
      refused++
      continue
    }
    assert.equal(lines(part).text, want, `cut at ${cut} of ${bytes.length}`)
  }
  return refused
}

/** A pseudo-random generator with a seed, so a failure repeats. */
function random(seed: number): () => number {
  let s = seed
  return () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    return s / 2 ** 32
  }
}

describe('store: JSONEachRow lines straight from ReadingBatch bytes', () => {
  it('writes exactly the lines of the row objects, for awkward readings', () => {
    const readings = [
      create(ReadingSchema, {
        eventId: 'abc-123:seq:7',
        deviceId: 'abc-123',
        ts: timestampFromDate(new Date('2025-08-26T12:34:56.789Z')),
        sensors: {
          temp: 26.1,
          humidity: -58.3,
          zero: 0,
          nan: Number.NaN,
          inf: -Infinity,
          big: 1e308,
          tiny: 5e-324,
        },
        meta: { fw: '1.0.7', site: 'HYD-PLANT-2', empty: '', unicode: 'Zürich ✓ 😀' },
        seq: 18446744073709551615n,
        receivedAt: timestampFromDate(new Date('2025-08-26T12:34:57Z')),
      }),
      create(ReadingSchema, {
        eventId: 'quote"back\\slash\nnew\tline\u0001\u007f\u2028',
        deviceId: '"; DROP TABLE telemetry; --',
        sensors: { 'a"b': 1, 'c\\d': 2, [`long-${'x'.repeat(300)}`]: 3 },
        meta: { [`k-${'é'.repeat(200)}`]: `v-${'y'.repeat(500)}` },
        seq: 9007199254740993n,
      }),
      create(ReadingSchema, { deviceId: 'minimal', sensors: { t: 1 } }),
      create(ReadingSchema, { ts: { seconds: -62135596800n, nanos: 0 } }),
      create(ReadingSchema, {
        ts: { seconds: -1n, nanos: 999_999_999 },
        receivedAt: { seconds: 0n, nanos: 1 },
      }),
      create(ReadingSchema, { ts: { seconds: 4_102_444_800n, nanos: 5_000_000 }, seq: 562949953421312n }),
      create(ReadingSchema),
    ]
    const bytes = batchOf(readings)
    const { batchId, rows, text } = telemetryLines(bytes)
    assert.equal(batchId, 'b-1')
    assert.equal(rows, readings.length)
    assert.equal(text, expectedLines(bytes))
    assert.deepEqual(telemetryLines(batchOf([], '')), { batchId: '', rows: 0, text: '' })
  })

  it('writes exactly the lines of the row objects, for 2,000 random readings', () => {
    const next = random(42)
    const alphabet = ['a', 'Z', '0', '-', ':', '"', '\\', '\n', '\u0000', 'é', '✓', '😀', ' ', '/']
    const text = (max: number) =>
      Array.from(
        { length: Math.floor(next() * max) },
        () => alphabet[Math.floor(next() * alphabet.length)],
      ).join('')
    const base = Date.UTC(2026, 0, 1)
    const readings = Array.from({ length: 2_000 }, (_, i) =>
      create(ReadingSchema, {
        eventId: `${text(12)}:seq:${i}`,
        deviceId: `dev-${Math.floor(next() * 50)}${i % 7 === 0 ? text(4) : ''}`,
        ts: timestampFromDate(new Date(base + Math.floor(next() * 86_400_000 * 400))),
        sensors: Object.fromEntries(
          Array.from({ length: Math.floor(next() * 6) }, (_, k) => [
            `s${k}${text(3)}`,
            (next() - 0.5) * 10 ** Math.floor(next() * 12),
          ]),
        ),
        meta: next() < 0.5 ? { site: `site-${Math.floor(next() * 5)}`, note: text(20) } : {},
        seq: BigInt(Math.floor(next() * 2 ** 53)) * BigInt(1 + Math.floor(next() * 2000)),
        receivedAt: next() < 0.9 ? timestampFromDate(new Date(base + Math.floor(next() * 1e9))) : undefined,
      }),
    )
    for (let at = 0; at < readings.length; at += 250) {
      const bytes = batchOf(readings.slice(at, at + 250), `b-${at}`)
      assert.equal(telemetryLines(bytes).text, expectedLines(bytes))
    }
  })

  it('skips unknown fields and keeps the last value of a repeated map key, as Protobuf does', () => {
    const reading = toBinary(
      ReadingSchema,
      create(ReadingSchema, {
        eventId: 'e1',
        deviceId: 'd1',
        sensors: { temp: 1, hum: 2 },
        meta: { fw: 'a' },
      }),
    )
    const later = toBinary(ReadingSchema, create(ReadingSchema, { sensors: { temp: 3 }, meta: { fw: 'b' } }))
    const unknown = new BinaryWriter()
      .tag(15, WireType.Varint)
      .uint64(12345678901234n)
      .tag(16, WireType.Bit32)
      .fixed32(7)
      .tag(17, WireType.LengthDelimited)
      .bytes(new Uint8Array([1, 2, 3]))
      .tag(18, WireType.Bit64)
      .double(1.5)
      .finish()
    // One Reading made of three encodings one after the other: Protobuf merges them.
    const merged = new Uint8Array([...reading, ...unknown, ...later])
    const bytes = new BinaryWriter()
      .tag(2, WireType.LengthDelimited)
      .bytes(merged)
      .tag(9, WireType.LengthDelimited)
      .string('unknown batch field')
      .tag(1, WireType.LengthDelimited)
      .string('b-merged')
      .finish()
    const { batchId, text } = telemetryLines(bytes)
    assert.equal(batchId, 'b-merged')
    assert.equal(text, expectedLines(bytes))
    assert.match(text, /"sensors":\{"temp":3,"hum":2\},"meta":\{"fw":"b"\}/)
  })

  it('refuses malformed bytes instead of writing a wrong row', () => {
    const bytes = batchOf([create(ReadingSchema, { eventId: 'e', deviceId: 'd', sensors: { t: 1 } })])
    const refused = sameOnEveryCut(bytes, expectedLines, telemetryLines)
    assert.ok(refused > bytes.length / 2, `only ${refused} cuts refused`)
    assert.throws(() => telemetryLines(new TextEncoder().encode('not protobuf \u0000\u00ff')))
    assert.throws(() => telemetryLines(new Uint8Array([0x12, 0x02, 0x0f, 0x00])), /wire type/)
  })
})

/** An inference as a row of `inferences`, built from protobuf-es's decoding: the reference the lines must equal. */
function inferenceRow(i: Inference) {
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

function expectedInferenceLines(bytes: Uint8Array): string {
  return fromBinary(InferenceBatchSchema, bytes)
    .inferences.map((i) => `${JSON.stringify(inferenceRow(i))}\n`)
    .join('')
}

function inferenceBatchOf(inferences: Inference[], batchId = 'i-1'): Uint8Array {
  return toBinary(InferenceBatchSchema, create(InferenceBatchSchema, { batchId, inferences }))
}

describe('store: JSONEachRow lines straight from InferenceBatch bytes', () => {
  it('writes exactly the lines of the row objects, for awkward and random inferences', () => {
    const next = random(7)
    const words = ['temp', 'hum"id', 'vib\\x', 'ü✓', 'high', 'low', '']
    const word = () => words[Math.floor(next() * words.length)] as string
    const num = () => (next() < 0.05 ? Number.NaN : (next() - 0.3) * 10 ** Math.floor(next() * 8))
    const inferences: Inference[] = [
      create(InferenceSchema),
      create(InferenceSchema, {
        eventId: 'e"1\n',
        deviceId: 'd-1',
        ts: timestampFromDate(new Date('2025-08-26T12:34:56.789Z')),
        score: 0.97,
        label: 'ALERT',
        anomalies: [
          { name: 'temp', severity: 'high', ratio: 9.5 },
          { name: 'vibration', severity: 'medium', ratio: 3 },
        ],
        explain: {
          shapTop: [
            { name: 'temp', contribution: 0.8, value: 41 },
            { name: 'hum', contribution: -0.1, value: 2 },
          ],
          spe: 12.5,
          speLimit: 3.25,
          t2: Number.POSITIVE_INFINITY,
          t2Limit: 9,
        },
        model: { name: 'fleet/default', version: 4_294_967_295 },
        inferredAt: { seconds: 1_764_000_000n, nanos: 123_456_789 },
        features: { temp: 41, hum: 2, 'b"ad': -0 },
      }),
      ...Array.from({ length: 1_000 }, (_, i) =>
        create(InferenceSchema, {
          eventId: `dev-${i % 40}:seq:${i}`,
          deviceId: `dev-${i % 40}`,
          ts: timestampFromDate(new Date(Date.UTC(2026, 0, 1) + Math.floor(next() * 1e10))),
          score: next(),
          label: ['OK', 'WARN', 'ALERT'][i % 3] as string,
          anomalies: Array.from({ length: Math.floor(next() * 3) }, () => ({
            name: word(),
            severity: word(),
            ratio: num(),
          })),
          explain:
            next() < 0.8
              ? {
                  shapTop: Array.from({ length: Math.floor(next() * 4) }, () => ({
                    name: word(),
                    contribution: num(),
                    value: num(),
                  })),
                  spe: num(),
                  speLimit: num(),
                  t2: num(),
                  t2Limit: num(),
                }
              : undefined,
          model: next() < 0.9 ? { name: word(), version: Math.floor(next() * 100) } : undefined,
          inferredAt: next() < 0.9 ? timestampFromDate(new Date(Date.UTC(2026, 0, 2) + i)) : undefined,
          features: Object.fromEntries(
            Array.from({ length: Math.floor(next() * 5) }, (_, k) => [`f${k}${word()}`, num()]),
          ),
        }),
      ),
    ]
    for (let at = 0; at < inferences.length; at += 200) {
      const bytes = inferenceBatchOf(inferences.slice(at, at + 200), `i-${at}`)
      const { batchId, rows, text } = inferenceLines(bytes)
      assert.equal(batchId, `i-${at}`)
      assert.equal(rows, Math.min(200, inferences.length - at))
      assert.equal(text, expectedInferenceLines(bytes))
    }
  })

  it('merges a repeated explanation and model as Protobuf does, and refuses malformed bytes', () => {
    const first = toBinary(
      InferenceSchema,
      create(InferenceSchema, {
        eventId: 'e',
        explain: { shapTop: [{ name: 'a', contribution: 1 }], spe: 1, t2: 2 },
        model: { name: 'm', version: 1 },
        ts: { seconds: 100n, nanos: 5_000_000 },
      }),
    )
    const second = toBinary(
      InferenceSchema,
      create(InferenceSchema, {
        explain: { shapTop: [{ name: 'b', contribution: 2 }], spe: 3 },
        model: { version: 2 },
        ts: { seconds: 200n },
      }),
    )
    const bytes = new BinaryWriter()
      .tag(2, WireType.LengthDelimited)
      .bytes(new Uint8Array([...first, ...second]))
      .finish()
    assert.equal(inferenceLines(bytes).text, expectedInferenceLines(bytes))
    assert.match(
      inferenceLines(bytes).text,
      /"explain_names":\["a","b"\].*"spe":3,.*"t2":2,.*"model_name":"m","model_version":2/,
    )
    const whole = inferenceBatchOf([create(InferenceSchema, { eventId: 'e', label: 'OK', score: 0.5 })])
    assert.ok(sameOnEveryCut(whole, expectedInferenceLines, inferenceLines) > 0)
  })
})
