import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import type { DescService } from '@bufbuild/protobuf'
import { parse } from 'yaml'
import { DeviceService } from '../gen/vigil/device/v1/device_pb.js'
import { InferenceService } from '../gen/vigil/inference/v1/inference_pb.js'
import { IngestService } from '../gen/vigil/ingest/v1/ingest_pb.js'
import { QueryService } from '../gen/vigil/query/v1/query_pb.js'
import { DEFAULT_PORTS } from '../services/common/config.js'

// Which process serves each public service (the kit's EchoService is a diagnostic, not exposed).
const SERVED_BY: [DescService, keyof typeof DEFAULT_PORTS][] = [
  [QueryService, 'query'],
  [DeviceService, 'query'],
  [IngestService, 'ingest'],
  [InferenceService, 'inference'],
]

interface Route {
  match: { prefix?: string; path?: string }
  route: { cluster: string; timeout?: string }
}

const config = parse(readFileSync(new URL('../deploy/envoy/envoy.yaml', import.meta.url), 'utf8'))
const hcm = config.static_resources.listeners[0].filter_chains[0].filters[0].typed_config
const routes: Route[] = hcm.route_config.virtual_hosts[0].routes
interface Cluster {
  name: string
  load_assignment: {
    endpoints: { lb_endpoints: { endpoint: { address: { socket_address: { port_value: number } } } }[] }[]
  }
  health_checks?: Record<string, unknown>[]
  typed_extension_protocol_options?: Record<
    string,
    { explicit_http_config?: { http2_protocol_options?: object } }
  >
}
const clusters = new Map<string, { port: number; healthChecked: boolean; http2: boolean }>(
  (config.static_resources.clusters as Cluster[]).map((c) => [
    c.name,
    {
      port: c.load_assignment.endpoints[0]?.lb_endpoints[0]?.endpoint.address.socket_address.port_value ?? 0,
      healthChecked: (c.health_checks ?? []).some((h) => 'grpc_health_check' in h),
      http2: Boolean(
        c.typed_extension_protocol_options?.['envoy.extensions.upstreams.http.v3.HttpProtocolOptions']
          ?.explicit_http_config?.http2_protocol_options,
      ),
    },
  ]),
)

/** The first route Envoy would pick for a request path (routes are tried in order). */
function routeFor(path: string): Route | undefined {
  return routes.find((r) =>
    r.match.path !== undefined ? r.match.path === path : path.startsWith(r.match.prefix ?? ''),
  )
}

describe('deploy/envoy/envoy.yaml against the contracts', () => {
  it('routes every method of every public service to a cluster on the port of the process that serves it', () => {
    for (const [service, component] of SERVED_BY) {
      for (const method of service.methods) {
        const path = `/${service.typeName}/${method.name}`
        const route = routeFor(path)
        assert.ok(route, `no route for ${path}`)
        assert.notEqual(route.match.prefix, '/', `${path} falls through to the dashboard route`)
        const cluster = clusters.get(route.route.cluster)
        assert.ok(cluster, `${path} → missing cluster ${route.route.cluster}`)
        assert.equal(cluster.port, DEFAULT_PORTS[component], `${path} → ${route.route.cluster} port`)
      }
    }
  })

  it('gives streams no timeout and every unary call one', () => {
    for (const [service] of SERVED_BY) {
      for (const method of service.methods) {
        const path = `/${service.typeName}/${method.name}`
        const timeout = routeFor(path)?.route.timeout
        if (method.methodKind === 'unary') assert.ok(timeout && timeout !== '0s', `${path} needs a timeout`)
        else assert.equal(timeout, '0s', `${path} is a ${method.methodKind} stream: no timeout`)
      }
    }
  })

  it('points no route at a missing cluster; upstreams speak HTTP/2 and are health-checked', () => {
    for (const r of routes) assert.ok(clusters.has(r.route.cluster), `route → ${r.route.cluster}`)
    for (const name of ['query', 'ingest', 'inference']) {
      assert.ok(clusters.get(name)?.http2, `${name} over HTTP/2`)
      assert.ok(clusters.get(name)?.healthChecked, `${name} health-checked`)
    }
    assert.equal(routeFor('/index.html')?.route.cluster, 'query', 'the dashboard')
  })

  it('has TLS, gRPC-Web, CORS, JWT authentication on the APIs, a local rate limit, and the router last', () => {
    const filters: string[] = hcm.http_filters.map((f: { name: string }) => f.name)
    for (const f of [
      'envoy.filters.http.grpc_web',
      'envoy.filters.http.cors',
      'envoy.filters.http.jwt_authn',
      'envoy.filters.http.local_ratelimit',
    ])
      assert.ok(filters.includes(f), f)
    assert.equal(filters.at(-1), 'envoy.filters.http.router')
    const jwt = hcm.http_filters.find(
      (f: { name: string }) => f.name === 'envoy.filters.http.jwt_authn',
    ).typed_config
    assert.deepEqual(jwt.rules[0], { match: { prefix: '/vigil.' }, requires: { provider_name: 'vigil' } })
    const tls = config.static_resources.listeners[0].filter_chains[0].transport_socket
    assert.equal(tls.name, 'envoy.transport_sockets.tls')
  })
})
