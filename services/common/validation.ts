import type { Timestamp } from '@bufbuild/protobuf/wkt'
import type { InferRequest } from '../../gen/vigil/inference/v1/inference_pb.js'
import type { Reading } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import type { Violation } from './errors.js'

/**
 * The bounds the contracts promise (documented in proto/vigil/telemetry/v1/telemetry.proto). The
 * bridge, ingest and inference all validate with these functions, one per message.
 */
export const LIMITS = {
  deviceIdMaxLength: 64,
  sensorsMax: 128,
  sensorNameMaxLength: 64,
  metaMax: 32,
  metaKeyMaxLength: 64,
  metaValueMaxLength: 256,
  payloadMaxBytes: 64 * 1024,
  eventIdMaxLength: 128,
  futureSkewMs: 5 * 60_000,
  maxAgeMs: 30 * 24 * 3600_000,
} as const

const DEVICE_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]*$/
const SENSOR_NAME = /^[a-z0-9][a-z0-9_.]*$/

// Devices send the same few sensor names and ids over and over: remember the good ones, so the hot
// path checks each name once, not once per reading. Both caches are bounded; a miss only costs time.
const CACHE_MAX = 50_000
const goodSensorNames = new Map<string, string>()
const goodDeviceIds = new Set<string>()

function remember(cache: { size: number; clear(): void }, add: () => void): void {
  if (cache.size >= CACHE_MAX) cache.clear()
  add()
}

/** A sensor name as Vigil stores it: trimmed, lower case, spaces and dashes folded to '_'. */
export function normalizeSensorName(name: string): string {
  const known = goodSensorNames.get(name)
  if (known !== undefined) return known
  return name
    .trim()
    .toLowerCase()
    .replace(/[\s-]+/g, '_')
}

/** Problems with a device id, under the given field path. */
export function validateDeviceId(deviceId: string, field = 'device_id'): Violation[] {
  if (goodDeviceIds.has(deviceId)) return []
  if (deviceId.length === 0) return [{ field, description: 'is required' }]
  if (deviceId.length > LIMITS.deviceIdMaxLength) {
    return [{ field, description: `must be at most ${LIMITS.deviceIdMaxLength} characters` }]
  }
  if (!DEVICE_ID.test(deviceId)) {
    return [
      {
        field,
        description: 'may hold only letters, digits and . _ : - and must start with a letter or digit',
      },
    ]
  }
  remember(goodDeviceIds, () => goodDeviceIds.add(deviceId))
  return []
}

function timestampMs(ts: Timestamp): number {
  return Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6)
}

function validateTimestamp(
  ts: Timestamp | undefined,
  field: string,
  nowMs: number,
  required: boolean,
): Violation[] {
  if (!ts) return required ? [{ field, description: 'is required' }] : []
  const ms = timestampMs(ts)
  if (!Number.isFinite(ms)) return [{ field, description: 'is not a valid time' }]
  if (ms > nowMs + LIMITS.futureSkewMs) {
    return [{ field, description: `is more than ${LIMITS.futureSkewMs / 60_000} minutes in the future` }]
  }
  if (ms < nowMs - LIMITS.maxAgeMs) {
    return [{ field, description: `is more than ${LIMITS.maxAgeMs / 86_400_000} days in the past` }]
  }
  return []
}

/**
 * True when every name is one seen valid before and already in its normalized form, and every value
 * a finite number: then no rule can fail (object keys are distinct, so no two normalize alike).
 * The usual reading, checked without building anything.
 */
function plainValues(values: Record<string, number>): boolean {
  let n = 0
  for (const name in values) {
    if (goodSensorNames.get(name) !== name) return false
    const value = values[name]
    if (typeof value !== 'number' || !Number.isFinite(value)) return false
    n++
  }
  return n > 0 && n <= LIMITS.sensorsMax
}

function validateValues(values: Record<string, number>, field: string): Violation[] {
  if (plainValues(values)) return []
  const out: Violation[] = []
  const names = Object.keys(values)
  if (names.length === 0) out.push({ field, description: 'must hold at least one value' })
  if (names.length > LIMITS.sensorsMax)
    out.push({ field, description: `must hold at most ${LIMITS.sensorsMax} values` })
  const seen = new Map<string, string>()
  for (const name of names.slice(0, LIMITS.sensorsMax + 1)) {
    const path = `${field}["${name.slice(0, 80)}"]`
    const normalized = normalizeSensorName(name)
    if (goodSensorNames.has(name)) {
      // A name seen valid before: only the per-reading checks remain.
    } else if (normalized.length === 0 || normalized.length > LIMITS.sensorNameMaxLength) {
      out.push({ field: path, description: `name must be 1 to ${LIMITS.sensorNameMaxLength} characters` })
    } else if (!SENSOR_NAME.test(normalized)) {
      out.push({
        field: path,
        description: 'name may hold only letters, digits, _ and . (spaces and - become _)',
      })
    } else {
      remember(goodSensorNames, () => goodSensorNames.set(name, normalized))
    }
    const other = seen.get(normalized)
    if (other !== undefined)
      out.push({ field: path, description: `is the same sensor as "${other}" once normalized` })
    seen.set(normalized, name)
    const value = values[name]
    if (typeof value !== 'number' || !Number.isFinite(value)) {
      out.push({ field: path, description: 'must be a finite number' })
    }
  }
  return out
}

function validateStrings(values: Record<string, string>, field: string): Violation[] {
  const out: Violation[] = []
  const keys = Object.keys(values)
  if (keys.length > LIMITS.metaMax)
    out.push({ field, description: `must hold at most ${LIMITS.metaMax} entries` })
  for (const key of keys.slice(0, LIMITS.metaMax + 1)) {
    const path = `${field}["${key.slice(0, 80)}"]`
    if (key.length === 0 || key.length > LIMITS.metaKeyMaxLength) {
      out.push({ field: path, description: `key must be 1 to ${LIMITS.metaKeyMaxLength} characters` })
    }
    if ((values[key] ?? '').length > LIMITS.metaValueMaxLength) {
      out.push({ field: path, description: `must be at most ${LIMITS.metaValueMaxLength} characters` })
    }
  }
  return out
}

/** Every rule a Reading breaks (empty when valid). `nowMs` is when it was received. */
export function validateReading(reading: Reading, nowMs = Date.now()): Violation[] {
  const out = validateDeviceId(reading.deviceId)
  out.push(
    ...validateTimestamp(reading.ts, 'ts', nowMs, true),
    ...validateValues(reading.sensors, 'sensors'),
    ...validateStrings(reading.meta, 'meta'),
  )
  if (reading.eventId.length > LIMITS.eventIdMaxLength) {
    out.push({ field: 'event_id', description: `must be at most ${LIMITS.eventIdMaxLength} characters` })
  }
  return out
}

/** Every rule an InferRequest breaks (empty when valid). */
export function validateInferRequest(req: InferRequest, nowMs = Date.now()): Violation[] {
  return [
    ...validateDeviceId(req.deviceId),
    ...validateTimestamp(req.ts, 'ts', nowMs, false),
    ...validateValues(req.features, 'features'),
    ...validateStrings(req.context, 'context'),
  ]
}

/** The payload-size rule, checked before any parsing. */
export function validatePayloadSize(bytes: number, field = 'payload'): Violation[] {
  return bytes > LIMITS.payloadMaxBytes
    ? [{ field, description: `is ${bytes} bytes; at most ${LIMITS.payloadMaxBytes} are accepted` }]
    : []
}
