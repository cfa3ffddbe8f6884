import { existsSync, readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { type AuthConfig, readAuthConfig } from './auth.js'

/** Raised when an environment variable is missing or malformed; the message names every bad one. */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`)
    this.name = 'ConfigError'
  }
}

/** Default ports of every component: the one place of truth used by services, `vigil up` and tests. */
export const DEFAULT_PORTS = {
  query: 8080,
  ingest: 8081,
  inference: 8082,
  bridge: 8083,
  store: 8084,
  /** The development token issuer of `vigil up`. */
  issuer: 8090,
  mqtt: 1883,
  mqtts: 8883,
  nats: 4222,
  clickhouse: 8123,
} as const

export type ServiceName = 'query' | 'ingest' | 'inference' | 'bridge' | 'store' | 'cli'

type Env = Record<string, string | undefined>

/**
 * Reads typed values from an environment, collecting every problem instead of stopping at the
 * first, so an operator fixes them all in one go. Call `done()` to throw when anything was wrong.
 */
export class EnvReader {
  private readonly problems: string[] = []

  constructor(private readonly env: Env = process.env) {}

  private raw(name: string): string | undefined {
    const value = this.env[name]
    return value === undefined || value.trim() === '' ? undefined : value.trim()
  }

  private fail<T>(name: string, why: string, fallback: T): T {
    this.problems.push(`${name}: ${why}`)
    return fallback
  }

  string(name: string, fallback: string): string {
    return this.raw(name) ?? fallback
  }

  optionalString(name: string): string | undefined {
    return this.raw(name)
  }

  required(name: string, what: string): string {
    return this.raw(name) ?? this.fail(name, `is required (${what})`, '')
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const value = this.raw(name)
    if (value === undefined) return fallback
    if ((allowed as readonly string[]).includes(value)) return value as T
    return this.fail(name, `must be one of ${allowed.join(', ')}, got "${value}"`, fallback)
  }

  int(name: string, fallback: number, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number {
    const value = this.raw(name)
    if (value === undefined) return fallback
    const n = Number(value)
    if (!Number.isInteger(n) || n < min || n > max) {
      return this.fail(name, `must be an integer from ${min} to ${max}, got "${value}"`, fallback)
    }
    return n
  }

  bool(name: string, fallback: boolean): boolean {
    const value = this.raw(name)?.toLowerCase()
    if (value === undefined) return fallback
    if (['1', 'true', 'yes', 'on'].includes(value)) return true
    if (['0', 'false', 'no', 'off'].includes(value)) return false
    return this.fail(name, `must be true or false, got "${value}"`, fallback)
  }

  url(name: string, fallback: string | undefined, protocols: readonly string[]): string | undefined {
    const value = this.raw(name) ?? fallback
    if (value === undefined) return undefined
    // nats-server accepts comma-separated seed lists; each must parse.
    for (const one of value.split(',')) {
      let parsed: URL
      try {
        parsed = new URL(one.trim())
      } catch {
        return this.fail(name, `must be a URL (${protocols.join(' or ')}), got "${value}"`, undefined)
      }
      if (!protocols.includes(parsed.protocol.replace(/:$/, ''))) {
        return this.fail(name, `must use ${protocols.join(' or ')}, got "${parsed.protocol}"`, undefined)
      }
    }
    return value
  }

  /** A path to a file that must exist and be readable; returns its contents. */
  file(name: string): Buffer | undefined {
    const path = this.raw(name)
    if (path === undefined) return undefined
    if (!existsSync(path)) return this.fail(name, `file "${path}" does not exist`, undefined)
    try {
      return readFileSync(path)
    } catch (err) {
      return this.fail(name, `cannot read "${path}": ${(err as Error).message}`, undefined)
    }
  }

  /** Adds a problem found by a cross-variable check. */
  problem(message: string): void {
    this.problems.push(message)
  }

  done(): void {
    if (this.problems.length > 0) throw new ConfigError(this.problems)
  }
}

export interface TlsConfig {
  cert: Buffer
  key: Buffer
  /**
   * When set, clients are asked for a certificate signed by this CA (mTLS), and outbound calls
   * trust it and present `cert`.
   */
  ca?: Buffer
  /** With `ca`: `require` refuses clients without a valid certificate; `optional` (browsers and services on one port) refuses only invalid ones. */
  clientAuth?: 'require' | 'optional'
}

/** What every Vigil process reads: where to listen, how to log, where the bus and the store are. */
export interface CommonConfig {
  service: ServiceName
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent'
  host: string
  port: number
  tls?: TlsConfig
  corsOrigins: string[]
  natsUrl: string
  natsUser?: string
  natsPassword?: string
  natsToken?: string
  /** The CA a nats-server with TLS is checked against (VIGIL_NATS_CA). */
  natsCa?: Buffer
  /** The CA a ClickHouse server over https is checked against (VIGIL_CLICKHOUSE_CA). */
  clickhouseCa?: Buffer
  clickhouseUrl?: string
  clickhouseUser: string
  clickhousePassword: string
  clickhouseDatabase: string
  /** A ClickHouse user for migrations and retention (server mode); the writer then needs INSERT only. */
  clickhouseSchemaUser?: string
  clickhouseSchemaPassword: string
  dataDir: string
  partitions: number
  shutdownTimeoutMs: number
  /** User authentication (VIGIL_AUTH_*); off when undefined. */
  auth?: AuthConfig
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const

/**
 * Reads the variables every service shares. `defaultPort` is the service's port from DEFAULT_PORTS.
 * Services extend the result with their own variables read from the same reader before `done()`.
 */
export function readCommonConfig(r: EnvReader, service: ServiceName, defaultPort: number): CommonConfig {
  const cert = r.file('VIGIL_TLS_CERT')
  const key = r.file('VIGIL_TLS_KEY')
  const ca = r.file('VIGIL_TLS_CA')
  const certSet = r.optionalString('VIGIL_TLS_CERT') !== undefined
  const keySet = r.optionalString('VIGIL_TLS_KEY') !== undefined
  if (certSet && !keySet) r.problem('VIGIL_TLS_KEY: is required when VIGIL_TLS_CERT is set')
  if (keySet && !certSet) r.problem('VIGIL_TLS_CERT: is required when VIGIL_TLS_KEY is set')
  const config: CommonConfig = {
    service,
    logLevel: r.oneOf('VIGIL_LOG_LEVEL', LOG_LEVELS, 'info'),
    host: r.string('VIGIL_HOST', '127.0.0.1'),
    port: r.int('VIGIL_PORT', defaultPort, 0, 65535),
    corsOrigins: r
      .string('VIGIL_CORS_ORIGINS', '*')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    natsUrl: r.url('VIGIL_NATS_URL', `nats://127.0.0.1:${DEFAULT_PORTS.nats}`, ['nats', 'tls', 'ws', 'wss'])!,
    natsUser: r.optionalString('VIGIL_NATS_USER'),
    natsPassword: r.optionalString('VIGIL_NATS_PASSWORD'),
    natsToken: r.optionalString('VIGIL_NATS_TOKEN'),
    natsCa: r.file('VIGIL_NATS_CA'),
    clickhouseCa: r.file('VIGIL_CLICKHOUSE_CA'),
    clickhouseUrl: r.url('VIGIL_CLICKHOUSE_URL', undefined, ['http', 'https']),
    clickhouseUser: r.string('VIGIL_CLICKHOUSE_USER', 'default'),
    clickhousePassword: r.string('VIGIL_CLICKHOUSE_PASSWORD', ''),
    clickhouseDatabase: r.string('VIGIL_CLICKHOUSE_DATABASE', 'vigil'),
    clickhouseSchemaUser: r.optionalString('VIGIL_CLICKHOUSE_SCHEMA_USER'),
    clickhouseSchemaPassword: r.string('VIGIL_CLICKHOUSE_SCHEMA_PASSWORD', ''),
    dataDir: resolve(r.string('VIGIL_DATA_DIR', '.vigil')),
    partitions: r.int('VIGIL_PARTITIONS', 16, 1, 1024),
    shutdownTimeoutMs: r.int('VIGIL_SHUTDOWN_TIMEOUT_MS', 15_000, 100, 600_000),
    auth: readAuthConfig(r),
  }
  if (config.clickhouseSchemaUser && !config.clickhouseUrl)
    r.problem('VIGIL_CLICKHOUSE_SCHEMA_USER: needs VIGIL_CLICKHOUSE_URL (embedded ClickHouse has no users)')
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(config.clickhouseDatabase)) {
    r.problem(`VIGIL_CLICKHOUSE_DATABASE: must be a plain identifier, got "${config.clickhouseDatabase}"`)
  }
  const clientAuth = r.oneOf('VIGIL_TLS_CLIENT_AUTH', ['require', 'optional'] as const, 'require')
  if (cert && key) config.tls = ca ? { cert, key, ca, clientAuth } : { cert, key }
  else if (ca) r.problem('VIGIL_TLS_CA: needs VIGIL_TLS_CERT and VIGIL_TLS_KEY as well')
  return config
}
