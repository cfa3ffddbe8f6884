import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { create, fromBinary, fromJson, fromJsonString, toBinary, toJson } from '@bufbuild/protobuf'
import { timestampDate, timestampFromDate } from '@bufbuild/protobuf/wkt'
import { InferRequestSchema, InferResponseSchema } from '../../gen/vigil/inference/v1/inference_pb.js'
import { ReadingBatchSchema, ReadingSchema } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { invalidArgument, violationsOf } from './errors.js'
import { LIMITS, normalizeSensorName, validateInferRequest, validateReading } from './validation.js'

// The seed's public JSON shapes, exactly as devices and programs send them.
const DEVICE_PAYLOAD =
  '{"deviceId":"abc-123","ts":"2025-08-26T12:34:56Z","sensors":{"temp":26.1,"humidity":58.3,"vibration":0.12},"meta":{"fw":"1.0.7","site":"HYD-PLANT-2"}}'
const INFER_REQUEST =
  '{"deviceId":"abc-123","features":{"temp":26.1,"humidity":58.3,"vibration":0.12},"context":{"site":"HYD-PLANT-2"}}'
const SEED_NOW = Date.parse('2025-08-26T12:35:00Z')

describe('contracts: the seed JSON maps onto the messages', () => {
  it('parses the device payload as a Reading, every field', () => {
    const r = fromJsonString(ReadingSchema, DEVICE_PAYLOAD)
    assert.equal(r.deviceId, 'abc-123')
    assert.equal(timestampDate(r.ts!).toISOString(), '2025-08-26T12:34:56.000Z')
    assert.deepEqual(r.sensors, { temp: 26.1, humidity: 58.3, vibration: 0.12 })
    assert.deepEqual(r.meta, { fw: '1.0.7', site: 'HYD-PLANT-2' })
    assert.equal(r.eventId, '')
    assert.equal(r.seq, 0n)
    assert.equal(r.receivedAt, undefined)
    assert.deepEqual(validateReading(r, SEED_NOW), [])
    // Canonical JSON round-trips to the same document.
    assert.deepEqual(toJson(ReadingSchema, r), JSON.parse(DEVICE_PAYLOAD))
  })

  it('parses the infer request as an InferRequest, every field', () => {
    const req = fromJsonString(InferRequestSchema, INFER_REQUEST)
    assert.equal(req.deviceId, 'abc-123')
    assert.deepEqual(req.features, { temp: 26.1, humidity: 58.3, vibration: 0.12 })
    assert.deepEqual(req.context, { site: 'HYD-PLANT-2' })
    assert.equal(req.ts, undefined)
    assert.deepEqual(validateInferRequest(req, SEED_NOW), [])
    assert.deepEqual(toJson(InferRequestSchema, req), JSON.parse(INFER_REQUEST))
  })

  it('answers infer with {deviceId, ts, score, label, anomalies[{name, severity}], explain{…}}', () => {
    const res = create(InferResponseSchema, {
      deviceId: 'abc-123',
      ts: timestampFromDate(new Date('2025-08-26T12:34:56Z')),
      score: 0.93,
      label: 'ALERT',
      anomalies: [{ name: 'vibration', severity: 'high', ratio: 12.5 }],
      explain: { shapTop: [{ name: 'vibration', contribution: 4.2, value: 0.12 }], spe: 9.1, speLimit: 3.2 },
      model: { name: 'fleet', version: 3 },
    })
    const json = toJson(InferResponseSchema, res) as Record<string, unknown>
    assert.equal(json.deviceId, 'abc-123')
    assert.equal(json.ts, '2025-08-26T12:34:56Z')
    assert.equal(json.score, 0.93)
    assert.equal(json.label, 'ALERT')
    assert.deepEqual(json.anomalies, [{ name: 'vibration', severity: 'high', ratio: 12.5 }])
    assert.deepEqual(json.explain, {
      shapTop: [{ name: 'vibration', contribution: 4.2, value: 0.12 }],
      spe: 9.1,
      speLimit: 3.2,
    })
    assert.deepEqual(json.model, { name: 'fleet', version: 3 })
    assert.deepEqual(fromJson(InferResponseSchema, json as never), res)
  })

  it('carries readings in a binary ReadingBatch', () => {
    const reading = fromJsonString(ReadingSchema, DEVICE_PAYLOAD)
    const batch = create(ReadingBatchSchema, { batchId: 'b-1', readings: [reading, reading], source: 'test' })
    const back = fromBinary(ReadingBatchSchema, toBinary(ReadingBatchSchema, batch))
    assert.equal(back.readings.length, 2)
    assert.deepEqual(back.readings[1]?.sensors, reading.sensors)
  })
})

describe('validation: the rules next to the contracts', () => {
  const valid = () => fromJsonString(ReadingSchema, DEVICE_PAYLOAD)
  const fields = (r: ReturnType<typeof valid>) => validateReading(r, SEED_NOW).map((v) => v.field)

  it('checks the device id pattern and length', () => {
    for (const bad of ['', '-leading-dash', 'has space', 'x'.repeat(65), 'slash/inside', 'plus+sign']) {
      const r = valid()
      r.deviceId = bad
      assert.deepEqual(fields(r), ['device_id'], bad)
    }
    const r = valid()
    r.deviceId = 'Plant-2.line:7_a'
    assert.deepEqual(fields(r), [])
  })

  it('wants finite sensor values, at least one and at most 128', () => {
    const r = valid()
    r.sensors.temp = Number.NaN
    r.sensors.humidity = Number.POSITIVE_INFINITY
    assert.deepEqual(fields(r), ['sensors["temp"]', 'sensors["humidity"]'])
    r.sensors = {}
    assert.deepEqual(fields(r), ['sensors'])
    r.sensors = Object.fromEntries(Array.from({ length: LIMITS.sensorsMax + 1 }, (_, i) => [`s${i}`, i]))
    assert.deepEqual(fields(r), ['sensors'])
  })

  it('normalizes sensor names and refuses bad or colliding ones', () => {
    assert.equal(normalizeSensorName('  Motor Temp-C '), 'motor_temp_c')
    const r = valid()
    r.sensors = { Temp: 1, temp: 2, bad$name: 3, ['x'.repeat(65)]: 4 }
    const v = validateReading(r, SEED_NOW)
    assert.deepEqual(
      v.map((x) => x.field),
      ['sensors["temp"]', 'sensors["bad$name"]', `sensors["${'x'.repeat(65)}"]`],
    )
    assert.match(v[0]!.description, /same sensor as "Temp"/)
  })

  it('refuses timestamps absurdly far in the future or past, and a missing one', () => {
    const r = valid()
    r.ts = timestampFromDate(new Date(SEED_NOW + 6 * 60_000))
    assert.match(validateReading(r, SEED_NOW)[0]!.description, /in the future/)
    r.ts = timestampFromDate(new Date(SEED_NOW - 31 * 86_400_000))
    assert.match(validateReading(r, SEED_NOW)[0]!.description, /in the past/)
    r.ts = undefined
    assert.deepEqual(validateReading(r, SEED_NOW), [{ field: 'ts', description: 'is required' }])
  })

  it('bounds meta', () => {
    const r = valid()
    r.meta = { fw: 'x'.repeat(257) }
    assert.deepEqual(fields(r), ['meta["fw"]'])
    r.meta = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v']))
    assert.deepEqual(fields(r), ['meta'])
  })

  it('turns violations into InvalidArgument with google.rpc.BadRequest details', () => {
    const r = valid()
    r.deviceId = ''
    r.sensors.temp = Number.NaN
    const err = invalidArgument('reading', validateReading(r, SEED_NOW))
    assert.match(
      err.rawMessage,
      /^invalid reading: device_id: is required; sensors\["temp"\]: must be a finite number$/,
    )
    assert.deepEqual(violationsOf(err), [
      { field: 'device_id', description: 'is required' },
      { field: 'sensors["temp"]', description: 'must be a finite number' },
    ])
  })
})
