// mosquitto's dynamic-security plugin (shipped with the Debian package): the first configuration
// file Vigil writes for it, and a client for its control topic, `$CONTROL/dynamic-security/v1`,
// through which the bridge keeps the broker's clients and roles in step with the device registry.

import { pbkdf2Sync, randomBytes, randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import mqtt, { type MqttClient } from 'mqtt'
import type { Logger } from './log.js'

const CONTROL = '$CONTROL/dynamic-security/v1'
const PLUGIN_PATHS = [
  '/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so',
  '/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so',
  '/usr/lib/mosquitto_dynamic_security.so',
  '/usr/local/lib/mosquitto_dynamic_security.so',
]

/** Where the plugin is installed, or undefined. */
export function dynsecPluginPath(): string | undefined {
  return PLUGIN_PATHS.find((p) => existsSync(p))
}

/** The role of the bridge: manage the plugin, read every device's telemetry and acks, send commands. */
export const BRIDGE_ROLE = 'vigil-bridge'
/** A device's role: its own topics only. */
export const deviceRole = (deviceId: string) => `device-${deviceId}`

type Acl = { acltype: string; topic: string; allow: boolean; priority?: number }

function bridgeAcls(): Acl[] {
  const allow = (acltype: string, topic: string): Acl => ({ acltype, topic, allow: true })
  return [
    allow('publishClientSend', `${CONTROL}/#`),
    allow('publishClientSend', CONTROL),
    allow('publishClientReceive', `${CONTROL}/#`),
    allow('subscribePattern', `${CONTROL}/#`),
    allow('subscribePattern', 'devices/+/telemetry'),
    allow('subscribePattern', 'devices/+/cmd/ack'),
    // Shared subscriptions are checked with their `$share/<group>/` prefix.
    allow('subscribePattern', '$share/+/devices/+/telemetry'),
    allow('subscribePattern', '$share/+/devices/+/cmd/ack'),
    allow('publishClientReceive', 'devices/#'),
    allow('publishClientSend', 'devices/+/cmd'),
  ]
}

export function deviceAcls(deviceId: string): Acl[] {
  const allow = (acltype: string, topic: string): Acl => ({ acltype, topic, allow: true })
  return [
    allow('publishClientSend', `devices/${deviceId}/telemetry`),
    allow('publishClientSend', `devices/${deviceId}/cmd/ack`),
    allow('subscribeLiteral', `devices/${deviceId}/cmd`),
    allow('publishClientReceive', `devices/${deviceId}/cmd`),
  ]
}

/**
 * The plugin's first configuration: nothing allowed by default, one client for the bridge (with
 * the password hashed as the plugin expects: PBKDF2-SHA512, base64) and its role. Devices are
 * added at run time through the control topic.
 */
export function initialDynsecConfig(bridge: { username: string; password: string }): string {
  const salt = randomBytes(12)
  const iterations = 1000
  const hash = pbkdf2Sync(bridge.password, salt, iterations, 64, 'sha512')
  return `${JSON.stringify(
    {
      defaultACLAccess: {
        publishClientSend: false,
        publishClientReceive: false,
        subscribe: false,
        unsubscribe: true,
      },
      clients: [
        {
          username: bridge.username,
          textName: 'Vigil bridge',
          password: hash.toString('base64'),
          salt: salt.toString('base64'),
          iterations,
          roles: [{ rolename: BRIDGE_ROLE }],
        },
      ],
      groups: [],
      roles: [{ rolename: BRIDGE_ROLE, textName: 'Vigil bridge', acls: bridgeAcls() }],
    },
    null,
    2,
  )}\n`
}

/** An error answer of the plugin (for example "Client already exists"). */
export class DynsecError extends Error {
  override name = 'DynsecError'
}

/** A connection to the broker that sends dynamic-security commands and waits for their answers. */
export class DynsecClient {
  private readonly waiting = new Map<string, { resolve: (r: { error?: string; data?: unknown }) => void }>()

  private constructor(
    private readonly client: MqttClient,
    private readonly log: Logger,
  ) {
    client.on('message', (_topic, payload) => {
      let body: { responses?: { correlationData?: string; error?: string; data?: unknown }[] }
      try {
        body = JSON.parse(payload.toString())
      } catch {
        return
      }
      for (const r of body.responses ?? []) {
        const w = r.correlationData ? this.waiting.get(r.correlationData) : undefined
        if (!w || !r.correlationData) continue
        this.waiting.delete(r.correlationData)
        w.resolve(r)
      }
    })
  }

  static async connect(
    url: string,
    auth: { username?: string; password?: string; ca?: Buffer; cert?: Buffer; key?: Buffer },
    log: Logger,
  ): Promise<DynsecClient> {
    const client = await mqtt.connectAsync(url, {
      clientId: `vigil-dynsec-${randomUUID().slice(0, 8)}`,
      username: auth.username,
      password: auth.password,
      ca: auth.ca,
      cert: auth.cert,
      key: auth.key,
      protocolVersion: 5,
      reconnectPeriod: 1_000,
      connectTimeout: 10_000,
    })
    await client.subscribeAsync(`${CONTROL}/response`, { qos: 1 })
    return new DynsecClient(client, log)
  }

  /** Sends one command; resolves with its data, throws DynsecError with the plugin's error text. */
  async command(command: string, args: Record<string, unknown> = {}, timeoutMs = 10_000): Promise<unknown> {
    const correlationData = randomUUID()
    const answer = new Promise<{ error?: string; data?: unknown }>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(correlationData)
        reject(new Error(`the broker did not answer "${command}" in ${timeoutMs} ms`))
      }, timeoutMs)
      this.waiting.set(correlationData, {
        resolve: (r) => {
          clearTimeout(timer)
          resolve(r)
        },
      })
    })
    await this.client.publishAsync(
      CONTROL,
      JSON.stringify({ commands: [{ command, ...args, correlationData }] }),
      {
        qos: 1,
      },
    )
    const r = await answer
    if (r.error) throw new DynsecError(`${command}: ${r.error}`)
    return r.data
  }

  /** Runs a command whose "already exists" answer means the work is done. */
  private async idempotent(command: string, args: Record<string, unknown>): Promise<void> {
    try {
      await this.command(command, args)
    } catch (err) {
      if (!(err instanceof DynsecError) || !/already exists/i.test(err.message)) throw err
    }
  }

  /** The device's role with exactly its ACLs (created, or its ACLs re-added). */
  async ensureDeviceRole(deviceId: string): Promise<void> {
    const rolename = deviceRole(deviceId)
    await this.idempotent('createRole', { rolename, textname: `device ${deviceId}` })
    for (const acl of deviceAcls(deviceId)) await this.idempotent('addRoleACL', { rolename, ...acl })
  }

  /** A broker client for the device with its password and role; replaces the password when it exists. */
  async createDeviceClient(deviceId: string, password: string): Promise<void> {
    await this.ensureDeviceRole(deviceId)
    try {
      await this.command('createClient', {
        username: deviceId,
        password,
        textname: `device ${deviceId}`,
        roles: [{ rolename: deviceRole(deviceId) }],
      })
    } catch (err) {
      if (!(err instanceof DynsecError) || !/already exists/i.test(err.message)) throw err
      await this.command('setClientPassword', { username: deviceId, password })
      // Its role back (a revocation took it). mosquitto answers "Internal error" to adding a role the
      // client has, and nothing to removing one it lacks: remove, then add.
      const role = { username: deviceId, rolename: deviceRole(deviceId) }
      await this.command('removeClientRole', role)
      await this.command('addClientRole', role)
      await this.command('enableClient', { username: deviceId })
    }
  }

  /**
   * A revoked device: its client disabled (disconnected, its password refused) and its role taken
   * away. The role matters for devices that present a certificate instead of a password
   * (`use_identity_as_username`): mosquitto does not ask the plugin about their login, only about
   * their topics, so without the role a revoked certificate may connect but do nothing.
   */
  async revokeDevice(deviceId: string): Promise<void> {
    await this.disableClient(deviceId)
    try {
      await this.command('removeClientRole', { username: deviceId, rolename: deviceRole(deviceId) })
    } catch (err) {
      if (!(err instanceof DynsecError) || !/not found|not have/i.test(err.message)) throw err
    }
  }

  /** Whether the broker has a client of that name. */
  async hasClient(username: string): Promise<boolean> {
    try {
      await this.command('getClient', { username })
      return true
    } catch (err) {
      if (err instanceof DynsecError && /not found/i.test(err.message)) return false
      throw err
    }
  }

  /** Disconnects the client and refuses it from now on. */
  async disableClient(username: string): Promise<void> {
    try {
      await this.command('disableClient', { username })
    } catch (err) {
      if (!(err instanceof DynsecError) || !/not found/i.test(err.message)) throw err
      this.log.debug({ username }, 'no broker client to disable')
    }
  }

  async close(): Promise<void> {
    await this.client.endAsync()
  }
}
