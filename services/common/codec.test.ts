import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, fromBinary, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import {
  AlertSchema,
  InferenceBatchSchema,
  InferenceSchema,
  ReadingBatchSchema,
  ReadingSchema,
} from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import {
  decodeForScoring,
  decodeReadingBatch,
  encodeAlert,
  encodeInferenceBatch,
  encodeReadingBatch,
  type InferenceFields,
} from './codec.js'

describe('codec', () => {
  it('encodes a ReadingBatch byte for byte as protobuf-es does', () => {
    const readings = [
      create(ReadingSchema, {
        eventId: 'abc-123:seq:7',
        deviceId: 'abc-123',
        ts: timestampFromDate(new Date('2025-08-26T12:34:56.789Z')),
        sensors: { temp: 26.1, humidity: -58.3, zero: 0, nan: Number.NaN, big: 1e308 },
        meta: { fw: '1.0.7', site: 'HYD-PLANT-2', empty: '', unicode: 'Zürich ✓' },
        seq: 18446744073709551615n,
        receivedAt: timestampFromDate(new Date('2025-08-26T12:34:57Z')),
      }),
      create(ReadingSchema, { deviceId: 'minimal', sensors: { t: 1 } }),
      create(ReadingSchema, { ts: { seconds: -62135596800n, nanos: 0 } }),
      create(ReadingSchema),
    ]
    for (const [batchId, source] of [
      ['b-1', 'bridge/host'],
      ['', ''],
    ]) {
      const expected = toBinary(ReadingBatchSchema, create(ReadingBatchSchema, { batchId, readings, source }))
      assert.deepEqual(encodeReadingBatch(batchId!, readings, source!), expected)
    }
  })

  it('decodes a ReadingBatch as protobuf-es does, and refuses a malformed one', () => {
    const readings = [
      create(ReadingSchema, {
        eventId: 'abc-123:seq:7',
        deviceId: 'abc-123',
        ts: timestampFromDate(new Date('2025-08-26T12:34:56.789Z')),
        sensors: { temp: 26.1, humidity: -58.3, zero: 0, big: 1e308 },
        meta: { fw: '1.0.7', unicode: 'Zürich ✓', empty: '' },
        seq: 18446744073709551615n,
        receivedAt: timestampFromDate(new Date('2025-08-26T12:34:57Z')),
      }),
      create(ReadingSchema, { deviceId: 'minimal', sensors: { t: 1 } }),
      create(ReadingSchema, { ts: { seconds: -62135596800n, nanos: 0 } }),
      create(ReadingSchema),
    ]
    const bytes = toBinary(
      ReadingBatchSchema,
      create(ReadingBatchSchema, { batchId: 'b-9', readings, source: 'x' }),
    )
    const ours = decodeReadingBatch(bytes)
    const theirs = fromBinary(ReadingBatchSchema, bytes)
    assert.deepEqual(ours.readings, theirs.readings)
    assert.equal(ours.batchId, 'b-9')
    assert.equal(ours.source, 'x')
    for (const bad of [bytes.subarray(0, bytes.length - 10), new Uint8Array([0xff, 0xff, 0xff, 0x01])]) {
      assert.throws(() => fromBinary(ReadingBatchSchema, bad))
      assert.throws(() => decodeReadingBatch(bad))
    }
  })

  it('encodes an InferenceBatch byte for byte as protobuf-es does', () => {
    const inferences: InferenceFields[] = [
      {
        eventId: 'd-1:seq:1',
        deviceId: 'd-1',
        ts: timestampFromDate(new Date('2025-08-26T12:34:56.789Z')),
        score: 0.93,
        label: 'ALERT',
        anomalies: [
          { name: 'temp', severity: 'high', ratio: 31.5 },
          { name: 'rpm', severity: 'low', ratio: 0 },
        ],
        explain: {
          shapTop: [
            { name: 'temp', contribution: 0.9, value: 99.5 },
            { name: 'rpm', contribution: 0, value: -0 },
          ],
          spe: 12.5,
          speLimit: 0.7,
          t2: 0,
          t2Limit: 19.1,
        },
        model: { name: 'fleet', version: 3 },
        inferredAt: timestampFromDate(new Date('2025-08-26T12:34:57Z')),
        features: { temp: 99.5, rpm: 0, 'unicode.ü': 1 },
      },
      {
        eventId: '',
        deviceId: '',
        score: 0,
        label: '',
        anomalies: [],
        features: {},
        model: { name: '', version: 0 },
      },
    ]
    for (const batchId of ['inf-1', '']) {
      const expected = toBinary(
        InferenceBatchSchema,
        create(InferenceBatchSchema, {
          batchId,
          inferences: inferences.map((i) =>
            create(InferenceSchema, i as MessageInitShape<typeof InferenceSchema>),
          ),
        }),
      )
      assert.deepEqual(encodeInferenceBatch(batchId, inferences), expected)
    }
  })

  it('encodes many varied inferences as protobuf-es does', () => {
    let seed = 7
    const rand = () => {
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed / 2147483648
    }
    const stamps = [
      { seconds: -62135596800n, nanos: 999_999_999 },
      { seconds: 253402300799n, nanos: 1 },
      { seconds: 0n, nanos: 0 },
      { seconds: 1_700_000_000n, nanos: 0 },
    ]
    const inferences: InferenceFields[] = Array.from({ length: 300 }, (_, k) => ({
      eventId: k % 7 === 0 ? `dév-${k}:✓` : `d-${k % 13}:seq:${k}`,
      deviceId: `d-${k % 13}`,
      ts: stamps[k % stamps.length],
      score: k % 11 === 0 ? 0 : rand(),
      label: ['OK', 'WARN', 'ALERT'][k % 3] as string,
      anomalies: Array.from({ length: k % 3 }, (_, j) => ({
        name: `s${j}`,
        severity: 'medium',
        ratio: rand() * 100,
      })),
      explain:
        k % 5 === 0
          ? undefined
          : {
              shapTop: Array.from({ length: 3 }, (_, j) => ({
                name: `s${j}`,
                contribution: rand(),
                value: rand() * 1e6 - 5e5,
              })),
              spe: rand() * 1e3,
              speLimit: 0.5,
              t2: k % 4 === 0 ? 0 : rand() * 50,
              t2Limit: 19,
            },
      model: { name: k % 2 ? 'fleet' : `device-d-${k % 13}`, version: (k % 5) * 1000 },
      inferredAt: stamps[(k + 1) % stamps.length],
      features: Object.fromEntries(
        Array.from({ length: k % 8 }, (_, j) => [`sensor_${j}`, rand() * 200 - 100]),
      ),
    }))
    const expected = toBinary(
      InferenceBatchSchema,
      create(InferenceBatchSchema, {
        batchId: 'inf-bench-1',
        inferences: inferences.map((i) =>
          create(InferenceSchema, i as MessageInitShape<typeof InferenceSchema>),
        ),
      }),
    )
    assert.deepEqual(encodeInferenceBatch('inf-bench-1', inferences), expected)
    for (const i of inferences.slice(0, 30)) {
      const alert = create(AlertSchema, {
        inference: create(InferenceSchema, i as MessageInitShape<typeof InferenceSchema>),
        label: i.label,
      })
      assert.deepEqual(encodeAlert(i), toBinary(AlertSchema, alert))
    }
  })

  it('decodes for scoring: ids, site, sensors, and the timestamp kept encoded for the inference', () => {
    const ts = timestampFromDate(new Date('2025-08-26T12:34:56.789Z'))
    const reading = create(ReadingSchema, {
      eventId: 'e-1',
      deviceId: 'd-1',
      ts,
      sensors: { temp: 21.5, rpm: 0 },
      meta: { fw: '1.0', site: 'north' },
      seq: 9n,
      receivedAt: ts,
    })
    const bytes = encodeReadingBatch('b-1', [reading, create(ReadingSchema, { deviceId: 'bare' })], 'x')
    const { batchId, readings } = decodeForScoring(bytes)
    assert.equal(batchId, 'b-1')
    assert.deepEqual(
      readings.map(({ tsBytes: _, eventIdBytes, ...rest }) => ({
        eventId: Buffer.from(eventIdBytes).toString(),
        ...rest,
      })),
      [
        { eventId: 'e-1', deviceId: 'd-1', site: 'north', sensors: { temp: 21.5, rpm: 0 } },
        { eventId: '', deviceId: 'bare', site: undefined, sensors: {} },
      ],
    )
    const base = {
      eventId: 'e-1',
      deviceId: 'd-1',
      score: 0.1,
      label: 'OK',
      anomalies: [],
      features: { temp: 21.5 },
    }
    assert.deepEqual(
      encodeInferenceBatch('i', [
        { ...base, eventId: '', eventIdBytes: readings[0]?.eventIdBytes, tsBytes: readings[0]?.tsBytes },
      ]),
      encodeInferenceBatch('i', [{ ...base, ts }]),
    )
    assert.throws(() => decodeForScoring(bytes.subarray(0, bytes.length - 12)))
  })
})
