import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import { ReadingBatchSchema, ReadingSchema } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { decodeReadingBatch, encodeReadingBatch } from './codec.js'

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
      // Non-ASCII and long strings (the encoder's ASCII fast path falls back), a negative int32.
      create(ReadingSchema, {
        eventId: 'Zürich-✓-😀',
        deviceId: 'ü'.repeat(40),
        ts: { seconds: 5n, nanos: -1 },
        sensors: { ['x'.repeat(200)]: 2 },
        meta: { ключ: 'значение' },
      }),
      create(ReadingSchema, { eventId: 'e'.repeat(300), seq: 1n }),
    ]
    for (const [batchId, source] of [
      ['b-1', 'bridge/host'],
      ['', ''],
      ['ß'.repeat(100), 's'.repeat(1000)],
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
})
