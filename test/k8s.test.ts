import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { Deployment } from 'kubernetes-models/apps/v1'
import { HorizontalPodAutoscaler } from 'kubernetes-models/autoscaling/v2'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1'
import { ConfigMap, Secret, Service } from 'kubernetes-models/v1'
import { parseAllDocuments, parse as parseYaml } from 'yaml'
import { DEFAULT_PORTS } from '../services/common/config.js'

type Obj = {
  apiVersion: string
  kind: string
  metadata: { name: string; namespace?: string }
  [k: string]: unknown
}
const root = fileURLToPath(new URL('..', import.meta.url))
const k8s = join(root, 'deploy/k8s')

const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'apps/v1/Deployment': Deployment,
  'v1/Service': Service,
  'v1/ConfigMap': ConfigMap,
  'v1/Secret': Secret,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'autoscaling/v2/HorizontalPodAutoscaler': HorizontalPodAutoscaler,
  'networking.k8s.io/v1/NetworkPolicy': NetworkPolicy,
}

function docs(file: string): Obj[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d) => d.toJSON() as Obj)
}

/** Strategic merge as kustomize does it for these objects: maps merge, lists of named items merge by name. */
function merge(base: unknown, patch: unknown): unknown {
  if (Array.isArray(base) && Array.isArray(patch)) {
    if (!patch.every((p) => p && typeof p === 'object' && 'name' in p)) return patch
    const out = base.map((b) => ({ ...b }))
    for (const p of patch) {
      const i = out.findIndex((b) => b.name === (p as { name: string }).name)
      if (i >= 0) out[i] = merge(out[i], p) as never
      else out.push(p as never)
    }
    return out
  }
  if (base && patch && typeof base === 'object' && typeof patch === 'object') {
    const out: Record<string, unknown> = { ...(base as Record<string, unknown>) }
    for (const [k, v] of Object.entries(patch)) out[k] = k in out ? merge(out[k], v) : v
    return out
  }
  return patch
}

/** The objects `kubectl apply -k <dir>` would apply (resources, patches, namespace). */
function build(dir: string): Obj[] {
  const k = parseYaml(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as {
    resources?: string[]
    patches?: { path: string }[]
    namespace?: string
  }
  let objs: Obj[] = []
  for (const r of k.resources ?? []) {
    const path = join(dir, r)
    objs.push(...(r.endsWith('.yaml') ? docs(path) : build(path)))
  }
  for (const p of k.patches ?? [])
    for (const patch of docs(join(dir, p.path))) {
      const i = objs.findIndex((o) => o.kind === patch.kind && o.metadata.name === patch.metadata.name)
      assert.ok(
        i >= 0,
        `${dir}: patch ${p.path} targets ${patch.kind}/${patch.metadata.name}, which does not exist`,
      )
      objs[i] = merge(objs[i], patch) as Obj
    }
  if (k.namespace) objs = objs.map((o) => ({ ...o, metadata: { ...o.metadata, namespace: k.namespace } }))
  return objs
}

/** Variable names the services read. */
function knownVariables(): Set<string> {
  const out = new Set<string>()
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name)
      if (e.isDirectory()) walk(p)
      else if (p.endsWith('.ts') && !p.endsWith('.test.ts'))
        for (const m of readFileSync(p, 'utf8').matchAll(/'(VIGIL_[A-Z_]+)'/g)) out.add(m[1] as string)
    }
  }
  walk(join(root, 'services'))
  return out
}

interface Container {
  name: string
  ports: { containerPort: number }[]
  env?: { name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }[]
  readinessProbe: { grpc: { port: number } }
  livenessProbe: { httpGet: { port: number } }
  securityContext: { readOnlyRootFilesystem: boolean; allowPrivilegeEscalation: boolean }
}

describe('deploy/k8s: kustomize base and overlays', () => {
  const overlays = ['dev', 'prod'].map((name) => ({ name, objs: build(join(k8s, 'overlays', name)) }))
  const known = knownVariables()

  it('every object of every overlay is valid against the Kubernetes schemas', () => {
    for (const { name, objs } of overlays) {
      assert.ok(objs.length >= 20, `${name}: ${objs.length} objects`)
      for (const o of objs) {
        const Model = MODELS[`${o.apiVersion}/${o.kind}`]
        assert.ok(Model, `${name}: no schema for ${o.apiVersion} ${o.kind}`)
        assert.doesNotThrow(() => new Model(o as never).validate(), `${name}: ${o.kind}/${o.metadata.name}`)
      }
    }
  })

  it("matches each service's port and variables: container port, probes, VIGIL_PORT, Service", () => {
    for (const { name, objs } of overlays) {
      const config = objs.find((o) => o.kind === 'ConfigMap') as unknown as { data: Record<string, string> }
      for (const key of Object.keys(config.data))
        assert.ok(known.has(key), `${name}: ConfigMap ${key} is read by no service`)
      for (const component of ['query', 'ingest', 'inference', 'store', 'bridge'] as const) {
        const port = DEFAULT_PORTS[component]
        const deployment = objs.find(
          (o) => o.kind === 'Deployment' && o.metadata.name === `vigil-${component}`,
        ) as unknown as {
          spec: {
            template: { spec: { containers: Container[]; securityContext: { runAsNonRoot: boolean } } }
          }
        }
        assert.ok(deployment, `${name}: vigil-${component}`)
        const pod = deployment.spec.template.spec
        const c = pod.containers[0] as Container
        assert.equal(c.ports[0]?.containerPort, port, `${component} container port`)
        assert.equal(c.readinessProbe.grpc.port, port, `${component} readiness probe (gRPC health)`)
        assert.equal(c.livenessProbe.httpGet.port, port, `${component} liveness probe`)
        assert.equal(c.env?.find((e) => e.name === 'VIGIL_PORT')?.value, String(port))
        for (const e of c.env ?? [])
          assert.ok(known.has(e.name), `${component}: ${e.name} is read by no service`)
        // Its own bus user, the password from the Secret; a key the Secret lacks fails here.
        const env = new Map((c.env ?? []).map((e) => [e.name, e]))
        assert.equal(env.get('VIGIL_NATS_USER')?.value, component, `${component} is its own NATS user`)
        assert.equal(
          env.get('VIGIL_NATS_PASSWORD')?.valueFrom?.secretKeyRef?.key,
          `nats-password-${component}`,
        )
        const secret = objs.find((o) => o.kind === 'Secret') as unknown as {
          stringData: Record<string, string>
        }
        for (const e of c.env ?? []) {
          const key = e.valueFrom?.secretKeyRef?.key
          if (key) assert.ok(key in secret.stringData, `${component}: secret key ${key} is defined`)
        }
        if (component === 'query') assert.equal(env.get('VIGIL_CLICKHOUSE_READ_USER')?.value, 'vigil_reader')
        assert.equal(pod.securityContext.runAsNonRoot, true)
        assert.equal(c.securityContext.readOnlyRootFilesystem, true)
        assert.equal(c.securityContext.allowPrivilegeEscalation, false)
        const service = objs.find(
          (o) => o.kind === 'Service' && o.metadata.name === component,
        ) as unknown as {
          spec: { ports: { port: number }[] }
        }
        assert.equal(service.spec.ports[0]?.port, port, `${component} Service port`)
        for (const kind of ['PodDisruptionBudget', 'HorizontalPodAutoscaler'])
          assert.ok(
            objs.some((o) => o.kind === kind && o.metadata.name === `vigil-${component}`),
            `${component} ${kind}`,
          )
      }
    }
  })

  it('applies the overlays: namespace, replicas, settings', () => {
    const [dev, prod] = overlays as unknown as [{ objs: Obj[] }, { objs: Obj[] }]
    const replicas = (objs: Obj[], n: string) =>
      (
        objs.find((o) => o.kind === 'Deployment' && o.metadata.name === n) as unknown as {
          spec: { replicas: number }
        }
      ).spec.replicas
    assert.ok(dev.objs.every((o) => o.metadata.namespace === 'vigil-dev'))
    assert.ok(prod.objs.every((o) => o.metadata.namespace === 'vigil'))
    assert.equal(replicas(dev.objs, 'vigil-inference'), 1)
    assert.equal(replicas(prod.objs, 'vigil-inference'), 3)
    assert.equal(replicas(prod.objs, 'vigil-query'), 2)
    const devConfig = dev.objs.find((o) => o.kind === 'ConfigMap') as unknown as {
      data: Record<string, string>
    }
    assert.equal(devConfig.data.VIGIL_LOG_LEVEL, 'debug')
    assert.equal(devConfig.data.VIGIL_NATS_URL, 'nats://nats:4222', 'the patch keeps the rest')
    // Scaling on consumer lag is declared where a backlog can form.
    const hpa = prod.objs.find(
      (o) => o.kind === 'HorizontalPodAutoscaler' && o.metadata.name === 'vigil-inference',
    )
    assert.match(JSON.stringify(hpa), /vigil_consumer_pending/)
  })
})
