// The device registry: one DeviceRecord per device in the NATS KV bucket `devices`. Credentials are
// made here, shown once, and kept only as a salted scrypt hash. The DeviceService, the CLI, the
// embedded broker's hooks and the bridge's dynamic-security sync all read and write through this.
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import { timestampNow } from '@bufbuild/protobuf/wkt'
import { jetstream } from '@nats-io/jetstream'
import { type KV, Kvm } from '@nats-io/kv'
import {
  type Device,
  type DeviceRecord,
  DeviceRecordSchema,
  DeviceSchema,
  DeviceStatus,
} from '../../gen/vigil/device/v1/device_pb.js'
import type { Violation } from './errors.js'
import { BUS, type NatsConnection } from './nats.js'
import { LIMITS, validateDeviceId } from './validation.js'

const SCRYPT = { N: 16384, r: 8, p: 1, keyLength: 32 }

function scryptAsync(password: string, salt: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    scrypt(password, salt, SCRYPT.keyLength, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  )
}

/** The KV key of a device: its id with characters KV keys cannot hold escaped (`:` → `=3a`). */
export function deviceKey(deviceId: string): string {
  return deviceId.replace(/[^A-Za-z0-9_.-]/g, (c) => `=${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
}

/** Every rule the registrable parts of a device break (empty when valid). */
export function validateDeviceFields(fields: {
  deviceId?: string
  site?: string
  labels?: Record<string, string>
}): Violation[] {
  const out: Violation[] = []
  if (fields.deviceId !== undefined) out.push(...validateDeviceId(fields.deviceId))
  if (fields.site !== undefined && fields.site.length > LIMITS.metaValueMaxLength)
    out.push({ field: 'site', description: `must be at most ${LIMITS.metaValueMaxLength} characters` })
  const labels = Object.entries(fields.labels ?? {})
  if (labels.length > LIMITS.metaMax)
    out.push({ field: 'labels', description: `at most ${LIMITS.metaMax} labels` })
  for (const [k, v] of labels.slice(0, LIMITS.metaMax + 1)) {
    if (k.length === 0 || k.length > LIMITS.metaKeyMaxLength)
      out.push({
        field: `labels["${k.slice(0, 80)}"]`,
        description: `key must be 1 to ${LIMITS.metaKeyMaxLength} characters`,
      })
    if (v.length > LIMITS.metaValueMaxLength)
      out.push({
        field: `labels["${k.slice(0, 80)}"]`,
        description: `must be at most ${LIMITS.metaValueMaxLength} characters`,
      })
  }
  return out
}

export class DeviceExistsError extends Error {
  override name = 'DeviceExistsError'
}
export class DeviceNotFoundError extends Error {
  override name = 'DeviceNotFoundError'
}

export interface DeviceChange {
  deviceId: string
  /** Undefined when the record was deleted. */
  record: DeviceRecord | undefined
}

export class DeviceRegistry {
  private constructor(readonly kv: KV) {}

  static async open(nc: NatsConnection): Promise<DeviceRegistry> {
    return new DeviceRegistry(await new Kvm(jetstream(nc)).open(BUS.kv.devices))
  }

  /**
   * Registers a device and makes its MQTT password (24 random bytes, base64url), returned this once.
   * Throws DeviceExistsError when the id is taken.
   */
  async register(fields: { deviceId: string; site: string; labels: Record<string, string> }): Promise<{
    device: Device
    password: string
  }> {
    const password = randomBytes(24).toString('base64url')
    const salt = randomBytes(16)
    const hash = await scryptAsync(password, salt)
    const now = timestampNow()
    const device = create(DeviceSchema, {
      deviceId: fields.deviceId,
      site: fields.site,
      labels: fields.labels,
      status: DeviceStatus.ACTIVE,
      createdAt: now,
      updatedAt: now,
      username: fields.deviceId,
    })
    const record = create(DeviceRecordSchema, { device, passwordHash: hash, passwordSalt: salt })
    try {
      await this.kv.create(deviceKey(fields.deviceId), toBinary(DeviceRecordSchema, record))
    } catch (err) {
      if (/exists|wrong last sequence/i.test((err as Error).message))
        throw new DeviceExistsError(`device ${fields.deviceId} is already registered`)
      throw err
    }
    return { device, password }
  }

  /** Removes a device's record (used to undo a registration the broker could not complete). */
  async remove(deviceId: string): Promise<void> {
    await this.kv.purge(deviceKey(deviceId))
  }

  async record(deviceId: string): Promise<DeviceRecord | undefined> {
    const entry = await this.kv.get(deviceKey(deviceId))
    if (entry?.operation !== 'PUT') return undefined
    return fromBinary(DeviceRecordSchema, entry.value)
  }

  async get(deviceId: string): Promise<Device> {
    const device = (await this.record(deviceId))?.device
    if (!device) throw new DeviceNotFoundError(`device ${deviceId} is not registered`)
    return device
  }

  /** Applies `change` to the stored record (optimistic: retried when another writer got there first). */
  private async modify(deviceId: string, change: (device: Device) => void): Promise<Device> {
    const key = deviceKey(deviceId)
    for (let attempt = 0; ; attempt++) {
      const entry = await this.kv.get(key)
      if (entry?.operation !== 'PUT') throw new DeviceNotFoundError(`device ${deviceId} is not registered`)
      const record = fromBinary(DeviceRecordSchema, entry.value)
      const device = record.device ?? create(DeviceSchema, { deviceId })
      change(device)
      device.updatedAt = timestampNow()
      record.device = device
      try {
        await this.kv.update(key, toBinary(DeviceRecordSchema, record), entry.revision)
        return device
      } catch (err) {
        if (attempt >= 5 || !/wrong last sequence/i.test((err as Error).message)) throw err
      }
    }
  }

  update(deviceId: string, fields: { site?: string; labels?: Record<string, string> }): Promise<Device> {
    return this.modify(deviceId, (d) => {
      if (fields.site !== undefined) d.site = fields.site
      if (fields.labels !== undefined) d.labels = fields.labels
    })
  }

  revoke(deviceId: string): Promise<Device> {
    return this.modify(deviceId, (d) => {
      d.status = DeviceStatus.REVOKED
    })
  }

  async list(): Promise<Device[]> {
    const out: Device[] = []
    for await (const key of await this.kv.keys()) {
      const entry = await this.kv.get(key)
      if (entry?.operation !== 'PUT') continue
      const device = fromBinary(DeviceRecordSchema, entry.value).device
      if (device) out.push(device)
    }
    return out.sort((a, b) => (a.deviceId < b.deviceId ? -1 : a.deviceId > b.deviceId ? 1 : 0))
  }

  /** Whether `password` is the active device's (constant time in the hash comparison). */
  async verify(deviceId: string, password: string): Promise<boolean> {
    const record = await this.record(deviceId)
    if (!record?.device || record.device.status !== DeviceStatus.ACTIVE) return false
    const hash = await scryptAsync(password, record.passwordSalt)
    return hash.length === record.passwordHash.length && timingSafeEqual(hash, record.passwordHash)
  }

  /** Calls `onChange` for every device now and for every later change, until `signal` aborts. */
  async watch(onChange: (change: DeviceChange) => void | Promise<void>, signal: AbortSignal): Promise<void> {
    const iter = await this.kv.watch({ key: '>' })
    signal.addEventListener('abort', () => iter.stop(), { once: true })
    for await (const e of iter) {
      const record = e.operation === 'PUT' ? fromBinary(DeviceRecordSchema, e.value) : undefined
      const deviceId = record?.device?.deviceId ?? e.key
      await onChange({ deviceId, record })
    }
  }
}
