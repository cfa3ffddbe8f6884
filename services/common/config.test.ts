import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { ConfigError, DEFAULT_PORTS, EnvReader, readCommonConfig } from './config.js'

function read(env: Record<string, string>) {
  const r = new EnvReader(env)
  const config = readCommonConfig(r, 'ingest', DEFAULT_PORTS.ingest)
  r.done()
  return config
}

describe('common config', () => {
  it('has working defaults for a laptop', () => {
    const c = read({})
    assert.equal(c.port, 8081)
    assert.equal(c.host, '127.0.0.1')
    assert.equal(c.natsUrl, 'nats://127.0.0.1:4222')
    assert.equal(c.clickhouseUrl, undefined)
    assert.equal(c.clickhouseDatabase, 'vigil')
    assert.equal(c.partitions, 16)
    assert.equal(c.tls, undefined)
    assert.deepEqual(c.corsOrigins, ['*'])
  })

  it('reads every variable it documents', () => {
    const c = read({
      VIGIL_PORT: '9000',
      VIGIL_HOST: '0.0.0.0',
      VIGIL_LOG_LEVEL: 'debug',
      VIGIL_NATS_URL: 'nats://a:4222,nats://b:4222',
      VIGIL_CLICKHOUSE_URL: 'https://ch.example:8443',
      VIGIL_CLICKHOUSE_DATABASE: 'telemetry_prod',
      VIGIL_PARTITIONS: '32',
      VIGIL_CORS_ORIGINS: 'https://a.example, https://b.example',
      VIGIL_DATA_DIR: '/var/lib/vigil',
    })
    assert.equal(c.port, 9000)
    assert.equal(c.host, '0.0.0.0')
    assert.equal(c.logLevel, 'debug')
    assert.equal(c.natsUrl, 'nats://a:4222,nats://b:4222')
    assert.equal(c.clickhouseUrl, 'https://ch.example:8443')
    assert.equal(c.clickhouseDatabase, 'telemetry_prod')
    assert.equal(c.partitions, 32)
    assert.deepEqual(c.corsOrigins, ['https://a.example', 'https://b.example'])
    assert.equal(c.dataDir, '/var/lib/vigil')
  })

  it('names every bad variable at once', () => {
    assert.throws(
      () =>
        read({
          VIGIL_PORT: '70000',
          VIGIL_NATS_URL: 'http://localhost:4222',
          VIGIL_CLICKHOUSE_URL: 'not a url',
          VIGIL_PARTITIONS: '0',
          VIGIL_CLICKHOUSE_DATABASE: 'drop table',
        }),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError)
        const text = err.problems.join('\n')
        assert.match(text, /VIGIL_PORT: must be an integer from 0 to 65535, got "70000"/)
        assert.match(text, /VIGIL_NATS_URL: must use nats or tls or ws or wss, got "http:"/)
        assert.match(text, /VIGIL_CLICKHOUSE_URL: must be a URL/)
        assert.match(text, /VIGIL_PARTITIONS: must be an integer from 1 to 1024/)
        assert.match(text, /VIGIL_CLICKHOUSE_DATABASE: must be a plain identifier/)
        assert.equal(err.problems.length, 5)
        return true
      },
    )
  })

  it('wants a TLS key with a certificate and a certificate with a CA', () => {
    assert.throws(
      () => read({ VIGIL_TLS_KEY: '/etc/hosts' }),
      /VIGIL_TLS_CERT: is required when VIGIL_TLS_KEY is set/,
    )
    assert.throws(
      () => read({ VIGIL_TLS_CA: '/etc/hosts' }),
      /VIGIL_TLS_CA: needs VIGIL_TLS_CERT and VIGIL_TLS_KEY/,
    )
    assert.throws(() => read({ VIGIL_TLS_CLIENT_AUTH: 'maybe' }), /VIGIL_TLS_CLIENT_AUTH/)
  })

  it('refuses ClickHouse users where there are none (embedded ClickHouse)', () => {
    assert.throws(() => read({ VIGIL_CLICKHOUSE_SCHEMA_USER: 'vigil_schema' }), /needs VIGIL_CLICKHOUSE_URL/)
    const server = read({
      VIGIL_CLICKHOUSE_URL: 'https://ch.example:8443',
      VIGIL_CLICKHOUSE_SCHEMA_USER: 'vigil_schema',
      VIGIL_CLICKHOUSE_CA: '/etc/hosts',
      VIGIL_NATS_CA: '/etc/hosts',
    })
    assert.equal(server.clickhouseSchemaUser, 'vigil_schema')
    assert.ok(server.clickhouseCa && server.natsCa, 'the CAs are read')
  })
})
