import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { Metrics } from '../services/common/metrics.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const read = (path: string) => readFileSync(join(root, path), 'utf8')

/** Every file under services/ that is code (not a test). */
function sources(dir = join(root, 'services')): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name)
    if (e.isDirectory()) return e.name === 'node_modules' ? [] : sources(path)
    return /\.tsx?$/.test(e.name) && !e.name.endsWith('.test.ts') ? [path] : []
  })
}

/** The metric names the services export: the ones their code names, and Node's default metrics. */
async function exportedMetrics(): Promise<Set<string>> {
  const names = new Set<string>()
  for (const file of sources())
    for (const m of readFileSync(file, 'utf8').matchAll(/['`](vigil_[a-z0-9_]+)['`]/g))
      names.add(m[1] as string)
  for (const metric of await new Metrics('test').registry.getMetricsAsJSON()) names.add(metric.name)
  return names
}

/** The vigil_* metrics an expression reads (histogram series mapped to their histogram). */
function metricsIn(expr: string): string[] {
  return [...expr.matchAll(/\bvigil_[a-z0-9_]+/g)].map((m) => m[0].replace(/_(bucket|sum|count)$/, ''))
}

describe('deploy/: Prometheus, Grafana, compose and the Dockerfile', () => {
  it('alert rules and dashboards only use metrics the services export', async () => {
    const exported = await exportedMetrics()
    const exprs: [string, string][] = []
    const alerts = parse(read('deploy/prometheus/alerts.yml')) as {
      groups: { rules: { alert: string; expr: string }[] }[]
    }
    for (const rule of alerts.groups.flatMap((g) => g.rules)) exprs.push([`alert ${rule.alert}`, rule.expr])
    const dashboards = readdirSync(join(root, 'deploy/grafana/dashboards'))
    assert.ok(dashboards.length >= 2)
    for (const file of dashboards) {
      const d = JSON.parse(read(`deploy/grafana/dashboards/${file}`)) as {
        uid: string
        panels: { title: string; targets: { expr: string }[] }[]
      }
      assert.ok(d.uid, `${file} has a uid`)
      for (const p of d.panels) for (const t of p.targets) exprs.push([`${file}: ${p.title}`, t.expr])
    }
    assert.ok(exprs.length > 20)
    for (const [where, expr] of exprs) {
      const used = metricsIn(expr)
      assert.ok(used.length > 0 || expr.startsWith('up{'), `${where} reads no vigil metric: ${expr}`)
      for (const name of used)
        assert.ok(exported.has(name), `${where} uses ${name}, which no service exports`)
    }
    for (const name of ['ConsumerLagGrowing', 'DeadLettersSpiking', 'ServiceDown', 'ModelLatencyHigh'])
      assert.ok(
        alerts.groups[0]?.rules.some((r) => r.alert === `Vigil${name}`),
        name,
      )
  })

  it('compose starts every service healthy-first, with variables the services read', () => {
    const compose = parse(read('deploy/compose.yaml'), { merge: true }) as {
      services: Record<
        string,
        {
          healthcheck?: object
          depends_on?: Record<string, { condition: string }>
          environment?: Record<string, string>
        }
      >
    }
    const known = new Set(
      sources().flatMap((f) => [...readFileSync(f, 'utf8').matchAll(/'(VIGIL_[A-Z_]+)'/g)].map((m) => m[1])),
    )
    for (const name of ['ingest', 'inference', 'query', 'store', 'bridge']) {
      const s = compose.services[name]
      assert.ok(s, name)
      assert.ok(s.healthcheck, `${name} has a health check`)
      assert.equal(s.depends_on?.nats?.condition, 'service_healthy', `${name} waits for NATS`)
      for (const key of Object.keys(s.environment ?? {}))
        assert.ok(known.has(key), `${name}: ${key} is read by no service`)
    }
    for (const infra of ['nats', 'mosquitto', 'clickhouse', 'envoy', 'prometheus', 'grafana'])
      assert.ok(compose.services[infra]?.healthcheck, `${infra} has a health check`)
    // Each service on the bus as its own user, with the password nats-server knows it by.
    for (const name of ['ingest', 'inference', 'query', 'store', 'bridge']) {
      const env = compose.services[name]?.environment ?? {}
      assert.equal(env.VIGIL_NATS_USER, name, `${name} is its own bus user`)
      assert.equal(env.VIGIL_NATS_PASSWORD, `\${VIGIL_NATS_PASSWORD_${name.toUpperCase()}}`)
      assert.ok(compose.services.nats?.environment?.[`VIGIL_NATS_PASSWORD_${name.toUpperCase()}`])
    }
  })

  it('gives ClickHouse a writer confined to the vigil database and a read-only, bounded reader', () => {
    const users = read('deploy/clickhouse/users.xml')
    const user = (name: string) => {
      const m = new RegExp(`<users>[\\s\\S]*<${name}>([\\s\\S]*?)</${name}>`).exec(users)
      assert.ok(m, `${name} is defined`)
      return m[1] as string
    }
    const grants = (xml: string) => [...xml.matchAll(/<query>(.*?)<\/query>/g)].map((g) => g[1])
    const writer = user('vigil_writer')
    assert.match(writer, /from_env="VIGIL_CLICKHOUSE_WRITER_PASSWORD"/)
    assert.deepEqual(grants(writer), ['GRANT INSERT ON vigil.*'], 'the writer may insert, nothing else')
    const schema = user('vigil_schema')
    for (const grant of grants(schema))
      assert.match(grant as string, / ON vigil\.\*$/, `schema grants stay on the vigil database: ${grant}`)
    assert.doesNotMatch(schema, /ALL|ACCESS MANAGEMENT|DROP|SYSTEM/)
    const reader = user('vigil_reader')
    assert.match(reader, /<profile>vigil_reader<\/profile>/)
    assert.deepEqual(
      [...reader.matchAll(/<query>(.*?)<\/query>/g)].map((g) => g[1]),
      ['GRANT SELECT ON vigil.*'],
    )
    const profile =
      /<profiles>[\s\S]*<vigil_reader>([\s\S]*?)<\/vigil_reader>[\s\S]*<\/profiles>/.exec(users)?.[1] ?? ''
    assert.match(profile, /<readonly>2<\/readonly>/)
    assert.match(profile, /<max_execution_time>30<\/max_execution_time>/)
    assert.match(profile, /<result_overflow_mode>throw<\/result_overflow_mode>/)
    const compose = parse(read('deploy/compose.yaml'), { merge: true }) as {
      services: Record<string, { environment?: Record<string, string>; volumes?: string[] }>
    }
    assert.ok(compose.services.clickhouse?.volumes?.some((v) => v.startsWith('./clickhouse/users.xml:')))
    assert.equal(compose.services.store?.environment?.VIGIL_CLICKHOUSE_USER, 'vigil_writer')
    assert.equal(compose.services.store?.environment?.VIGIL_CLICKHOUSE_SCHEMA_USER, 'vigil_schema')
    assert.equal(compose.services.query?.environment?.VIGIL_CLICKHOUSE_READ_USER, 'vigil_reader')
  })

  it('builds an image that runs as a non-root user with production dependencies only', () => {
    const dockerfile = read('deploy/Dockerfile')
    assert.match(dockerfile, /^USER node$/m)
    assert.match(dockerfile, /npm ci --omit=dev/)
    assert.match(dockerfile, /ONNXRUNTIME_NODE_INSTALL=skip/)
    assert.match(dockerfile, /rm -rf node_modules\/chdb/)
    assert.match(read('.dockerignore'), /^node_modules$/m)
  })
})
