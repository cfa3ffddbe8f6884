import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, fromBinary, type MessageInitShape, toBinary } from '@bufbuild/protobuf'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import {
  InferenceBatchSchema,
  InferenceSchema,
  ReadingBatchSchema,
  ReadingSchema,
} from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import {
  decodeReadingBatch,
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
})
