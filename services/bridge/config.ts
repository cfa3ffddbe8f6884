import { hostname } from 'node:os'
import { readBatchConfig } from '../common/batcher.js'
import type { CommonConfig, EnvReader } from '../common/config.js'

export interface BridgeConfig extends CommonConfig {
  mqttUrl: string
  mqttUsername?: string
  mqttPassword?: string
  mqttCa?: Buffer
  mqttCert?: Buffer
  mqttKey?: Buffer
  mqttClientId: string
  mqttShareGroup: string
  batchMax: number
  batchLingerMs: number
  maxPending: number
  deviceRate: number
  deviceBurst: number
  /** Keep mosquitto's dynamic-security plugin in step with the device registry. */
  mqttDynsec: boolean
}

/** The bridge's own variables (documented in README.md and services/bridge/README.md). */
export function readBridgeConfig(r: EnvReader, common: CommonConfig): BridgeConfig {
  return {
    ...common,
    mqttUrl: r.url('VIGIL_MQTT_URL', 'mqtt://127.0.0.1:1883', ['mqtt', 'mqtts', 'tcp', 'ssl'])!,
    mqttUsername: r.optionalString('VIGIL_MQTT_USERNAME'),
    mqttPassword: r.optionalString('VIGIL_MQTT_PASSWORD'),
    mqttCa: r.file('VIGIL_MQTT_CA'),
    mqttCert: r.file('VIGIL_MQTT_CERT'),
    mqttKey: r.file('VIGIL_MQTT_KEY'),
    mqttClientId: r.string('VIGIL_MQTT_CLIENT_ID', `vigil-bridge-${hostname()}`),
    mqttShareGroup: r.string('VIGIL_MQTT_SHARE_GROUP', 'vigil'),
    ...readBatchConfig(r),
    maxPending: r.int('VIGIL_BRIDGE_MAX_PENDING', 50_000, 100, 10_000_000),
    deviceRate: r.int('VIGIL_DEVICE_RATE', 100, 0, 1_000_000),
    deviceBurst: r.int('VIGIL_DEVICE_BURST', 200, 1, 10_000_000),
    mqttDynsec: r.bool('VIGIL_MQTT_DYNSEC', false),
  }
}
