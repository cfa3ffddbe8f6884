import { isUtf8 } from 'node:buffer'
import { fromBinary, fromJson, type JsonValue } from '@bufbuild/protobuf'
import type { Timestamp } from '@bufbuild/protobuf/wkt'
import { type Reading, ReadingSchema, RejectReason } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { emptyReading } from './codec.js'
import type { Violation } from './errors.js'
import { normalizeSensorName, validatePayloadSize, validateReading } from './validation.js'

/** Why a payload was not accepted, with the details an operator needs. */
export interface Refusal {
  reason: RejectReason
  detail: string
  violations: Violation[]
  /** The device, when it could be told. */
  deviceId?: string
}

export type Decoded = { ok: true; reading: Reading } | { ok: false; refusal: Refusal }

const JSON_TYPES = new Set(['application/json', 'text/json'])
const PROTO_TYPES = new Set([
  'application/x-protobuf',
  'application/protobuf',
  'application/vnd.google.protobuf',
])

/** What the payload is, by its MQTT v5 content type when given, else by its first byte. */
export function payloadKind(payload: Uint8Array, contentType?: string): 'json' | 'protobuf' {
  const type = contentType?.split(';')[0]?.trim().toLowerCase()
  if (type && JSON_TYPES.has(type)) return 'json'
  if (type && PROTO_TYPES.has(type)) return 'protobuf'
  // A JSON object starts with '{' after optional white space; a binary Reading never starts with
  // 0x7b (field 15, wire type 3 is not a field of Reading).
  for (const byte of payload) {
    if (byte === 0x20 || byte === 0x09 || byte === 0x0a || byte === 0x0d) continue
    return byte === 0x7b ? 'json' : 'protobuf'
  }
  return 'json'
}

const refuse = (
  reason: RejectReason,
  detail: string,
  violations: Violation[] = [],
  deviceId?: string,
): Decoded => ({
  ok: false,
  refusal: { reason, detail, violations, ...(deviceId ? { deviceId } : {}) },
})

/**
 * Decodes a device payload: the seed's JSON (canonical Protobuf JSON of `Reading`) or a binary
 * `Reading`. Unknown JSON fields are ignored so devices may send more than Vigil reads; wrong types
 * are refused.
 */
export function decodeReading(payload: Uint8Array, contentType?: string): Decoded {
  const size = validatePayloadSize(payload.length)
  if (size.length > 0) return refuse(RejectReason.OVERSIZE, size[0]!.description, size)
  if (payloadKind(payload, contentType) === 'protobuf') {
    if (payload.length === 0) return refuse(RejectReason.BAD_PROTOBUF, 'empty payload')
    try {
      return { ok: true, reading: fromBinary(ReadingSchema, payload) }
    } catch (err) {
      return refuse(RejectReason.BAD_PROTOBUF, `not a binary Reading: ${(err as Error).message}`)
    }
  }
  let json: JsonValue
  // isUtf8 and Buffer#toString are native and cheaper than a fatal TextDecoder.
  if (!isUtf8(payload)) return refuse(RejectReason.BAD_JSON, 'not JSON: the payload is not valid UTF-8')
  try {
    const text = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8')
    if (text.trim() === '') return refuse(RejectReason.BAD_JSON, 'empty payload')
    json = JSON.parse(text) as JsonValue
  } catch (err) {
    return refuse(RejectReason.BAD_JSON, `not JSON: ${(err as Error).message}`)
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return refuse(RejectReason.BAD_JSON, 'the payload must be a JSON object')
  }
  const fast = readingFromPlainJson(json)
  if (fast) return { ok: true, reading: fast }
  try {
    return { ok: true, reading: fromJson(ReadingSchema, json, { ignoreUnknownFields: true }) }
  } catch (err) {
    const deviceId = typeof json.deviceId === 'string' ? json.deviceId : undefined
    const message = (err as Error).message.replace(
      /^cannot decode message vigil\.telemetry\.v1\.Reading from JSON: /,
      '',
    )
    return refuse(
      RejectReason.INVALID,
      message,
      [{ field: fieldOf(message), description: message }],
      deviceId,
    )
  }
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/

/**
 * The common shape of a device payload, converted without reflection: string ids, an RFC 3339
 * `ts`, number sensor values, string meta values, a whole-number `seq`. Anything else returns
 * undefined and goes through protobuf-es's full canonical-JSON parser, which also words the errors,
 * so both paths accept and refuse exactly the same documents.
 */
function readingFromPlainJson(json: { [k: string]: JsonValue }): Reading | undefined {
  const reading = emptyReading()
  for (const key in json) {
    const value = json[key]
    switch (key) {
      case 'deviceId':
      case 'device_id':
        if (typeof value !== 'string') return undefined
        reading.deviceId = value
        break
      case 'eventId':
      case 'event_id':
        if (typeof value !== 'string') return undefined
        reading.eventId = value
        break
      case 'ts': {
        if (typeof value !== 'string' || !RFC3339.test(value)) return undefined
        const ms = Date.parse(value)
        if (Number.isNaN(ms)) return undefined
        // The fraction's digits, exactly (Date.parse keeps milliseconds only): RFC3339 placed
        // them after the seconds, at index 19.
        let nanos = 0
        if (value.charCodeAt(19) === 0x2e) {
          let scale = 100_000_000
          for (let k = 20; k < 29; k++) {
            const digit = value.charCodeAt(k) - 0x30
            if (digit < 0 || digit > 9) break
            nanos += digit * scale
            scale /= 10
          }
        }
        reading.ts = { $typeName: 'google.protobuf.Timestamp', seconds: BigInt(Math.floor(ms / 1000)), nanos }
        break
      }
      case 'sensors': {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
        for (const name in value) {
          const v = value[name]
          if (typeof v !== 'number') return undefined
          reading.sensors[name] = v
        }
        break
      }
      case 'meta': {
        if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
        for (const name in value) {
          const v = value[name]
          if (typeof v !== 'string') return undefined
          reading.meta[name] = v
        }
        break
      }
      case 'seq':
        if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) return undefined
        reading.seq = BigInt(value)
        break
      default:
        // receivedAt and unknown fields: the full parser decides.
        return undefined
    }
  }
  return reading
}

/** The field a protobuf-es JSON error names ("cannot decode field vigil.telemetry.v1.Reading.ts …"). */
function fieldOf(message: string): string {
  const match = /field vigil\.telemetry\.v1\.Reading\.(\w+)/.exec(message)
  return match?.[1] ?? 'payload'
}

/** The part of a Reading that content-hash event ids are made of, in a stable order. */
function contentHash(reading: Reading): string {
  const names = Object.keys(reading.sensors).sort()
  let h1 = 0xdeadbeef
  let h2 = 0x41c6ce57
  const mix = (s: string) => {
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i)
      h1 = Math.imul(h1 ^ c, 2654435761)
      h2 = Math.imul(h2 ^ c, 1597334677)
    }
  }
  for (const name of names) {
    mix(name)
    mix('=')
    mix(String(reading.sensors[name]))
    mix(';')
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909)
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909)
  return ((h2 >>> 0).toString(16).padStart(8, '0') + (h1 >>> 0).toString(16).padStart(8, '0')).slice(0, 16)
}

function truncateToMillis(ts: Timestamp): void {
  ts.nanos = Math.floor(ts.nanos / 1_000_000) * 1_000_000
}

/**
 * Validates and canonicalizes a reading in place, as the bridge and ingest both must: the topic's
 * device id fills a missing one and must match a given one; the timestamp is cut to milliseconds;
 * sensor names are normalized; `received_at` is set; `event_id` is kept when given, else derived
 * from the device id and `seq`, else from device id, timestamp and a hash of the values.
 */
export function canonicalizeReading(
  reading: Reading,
  receivedAt: Timestamp,
  opts: { topicDeviceId?: string; nowMs?: number } = {},
): Refusal | undefined {
  if (opts.topicDeviceId !== undefined) {
    if (reading.deviceId === '') reading.deviceId = opts.topicDeviceId
    else if (reading.deviceId !== opts.topicDeviceId) {
      return {
        reason: RejectReason.TOPIC_MISMATCH,
        detail: `payload deviceId "${reading.deviceId.slice(0, 80)}" differs from the topic's "${opts.topicDeviceId}"`,
        violations: [
          { field: 'device_id', description: `must match the topic's device id "${opts.topicDeviceId}"` },
        ],
        deviceId: opts.topicDeviceId,
      }
    }
  }
  const violations = validateReading(reading, opts.nowMs ?? Date.now())
  if (violations.length > 0) {
    return {
      reason: RejectReason.INVALID,
      detail: violations.map((v) => `${v.field}: ${v.description}`).join('; '),
      violations,
      ...(reading.deviceId ? { deviceId: reading.deviceId } : {}),
    }
  }
  truncateToMillis(reading.ts!)
  if (Object.keys(reading.sensors).some((name) => normalizeSensorName(name) !== name)) {
    const sensors: Record<string, number> = {}
    for (const name in reading.sensors) sensors[normalizeSensorName(name)] = reading.sensors[name]!
    reading.sensors = sensors
  }
  reading.receivedAt = receivedAt
  if (reading.eventId === '') {
    const ms = Number(reading.ts!.seconds) * 1000 + reading.ts!.nanos / 1_000_000
    reading.eventId =
      reading.seq > 0n
        ? `${reading.deviceId}:seq:${reading.seq}`
        : `${reading.deviceId}:${ms}:${contentHash(reading)}`
  }
  return undefined
}

/** The device id in a telemetry topic `devices/{deviceId}/telemetry`, or undefined. */
export function deviceIdFromTopic(topic: string): string | undefined {
  if (!topic.startsWith('devices/') || !topic.endsWith('/telemetry')) return undefined
  const id = topic.slice(8, -10)
  return id.length > 0 && !id.includes('/') ? id : undefined
}
