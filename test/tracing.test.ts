import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import { after, before, describe, it } from 'node:test'
import { createClient } from '@connectrpc/connect'
import { createGrpcTransport } from '@connectrpc/connect-node'
import mqtt from 'mqtt'
import { IngestService } from '../gen/vigil/ingest/v1/ingest_pb.js'
import { QueryService } from '../gen/vigil/query/v1/query_pb.js'
import { createLogger } from '../services/common/log.js'
import { connectNats, type NatsConnection, provisionBus } from '../services/common/nats.js'
import { freePort } from '../services/common/net.js'
import { buildOnnx } from '../services/inference/model/onnx.js'
import { normalReading, Rng, syntheticFleet } from '../services/inference/model/synthetic.js'
import { trainingSet, trainModel } from '../services/inference/model/train.js'
import { ModelRegistry } from '../services/inference/registry.js'
import { eventually } from './fixtures/bus.js'
import { type MosquittoFixture, startMosquitto } from './fixtures/mosquitto.js'
import { type NatsFixture, startNats } from './fixtures/nats.js'
import { tempDir } from './fixtures/process.js'
import { type ServiceProcess, startService } from './fixtures/services.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })

interface CollectedSpan {
  service: string
  name: string
  traceId: string
  spanId: string
  parentSpanId: string
  links: { traceId: string; spanId: string }[]
}

/** OTLP/JSON ids are hex; accept base64 too. */
const hex = (id: string | undefined) =>
  !id ? '' : /^[0-9a-f]+$/.test(id) ? id : Buffer.from(id, 'base64').toString('hex')

/** An OTLP/HTTP (JSON) receiver keeping every span in memory: what the services export, as they export it. */
function startCollector(port: number): { spans: CollectedSpan[]; server: Server } {
  const spans: CollectedSpan[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c) => chunks.push(c))
    req.on('end', () => {
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8'))
        for (const rs of body.resourceSpans ?? []) {
          const service =
            rs.resource?.attributes?.find((a: { key: string }) => a.key === 'service.name')?.value
              ?.stringValue ?? ''
          for (const ss of rs.scopeSpans ?? [])
            for (const s of ss.spans ?? [])
              spans.push({
                service,
                name: s.name,
                traceId: hex(s.traceId),
                spanId: hex(s.spanId),
                parentSpanId: hex(s.parentSpanId),
                links: (s.links ?? []).map((l: { traceId: string; spanId: string }) => ({
                  traceId: hex(l.traceId),
                  spanId: hex(l.spanId),
                })),
              })
        }
      } catch {
        // Not OTLP JSON: ignored.
      }
      res.writeHead(200, { 'Content-Type': 'application/json' }).end('{}')
    })
  })
  server.listen(port, '127.0.0.1')
  return { spans, server }
}

describe('tracing: one trace follows a reading from the device to storage and the Watch stream', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let broker: MosquittoFixture
  let services: ServiceProcess[] = []
  let collector: { spans: CollectedSpan[]; server: Server }
  const dir = tempDir('tracing')
  const byName = (traceId: string, name: string) =>
    collector.spans.find((s) => s.traceId === traceId && s.name === name) as CollectedSpan

  before(async () => {
    const port = await freePort()
    collector = startCollector(port)
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    // A fleet model serving from the start.
    const rng = new Rng(3)
    const [device] = syntheticFleet(1, 2)
    const rows = Array.from({ length: 300 }, (_, i) => ({ sensors: normalReading(device!, rng), tsMs: i }))
    const registry = await ModelRegistry.open(nc)
    const stored = await registry.store(buildOnnx(trainModel(trainingSet(rows, 'test'), { scope: 'fleet' })))
    await registry.setAlias('fleet', 'production', stored.spec.version)
    broker = await startMosquitto()
    const env = {
      VIGIL_NATS_URL: nats.url,
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      VIGIL_LOG_LEVEL: 'debug',
    }
    services = await Promise.all([
      startService('bridge', { ...env, VIGIL_MQTT_URL: broker.url }),
      startService('ingest', { ...env, VIGIL_BATCH_LINGER_MS: '200' }),
      startService('inference', { ...env, VIGIL_BOOTSTRAP_ROWS: '0', VIGIL_INFERENCE_THREADS: '1' }),
      startService('query', { ...env, VIGIL_DATA_DIR: dir.path, VIGIL_STORE_LINGER_MS: '50' }),
    ])
  })
  after(async () => {
    await Promise.all(services.map((s) => s.stop()))
    await broker?.stop()
    await nc?.drain()
    await nats?.stop()
    collector?.server.close()
    dir.remove()
  })

  it('continues the trace a device sent in an MQTT v5 user property through every stage', async () => {
    const [query] = services.slice(3)
    const watch = createClient(QueryService, createGrpcTransport({ baseUrl: query!.url }))
    const abort = new AbortController()
    const events: string[] = []
    const watching = (async () => {
      for await (const e of watch.watch(
        { deviceIds: ['trace-1'], readings: true, inferences: true },
        { signal: abort.signal },
      ))
        if (e.event.case) events.push(e.event.case)
    })().catch(() => undefined)
    await new Promise((r) => setTimeout(r, 500))
    const traceId = randomBytes(16).toString('hex')
    const deviceSpan = randomBytes(8).toString('hex')
    const [spec] = syntheticFleet(1, 2)
    const client = await mqtt.connectAsync(broker.url, { protocolVersion: 5 })
    await client.publishAsync(
      'devices/trace-1/telemetry',
      JSON.stringify({ ts: new Date().toISOString(), sensors: normalReading(spec!, new Rng(1)), seq: 1 }),
      { qos: 1, properties: { userProperties: { traceparent: `00-${traceId}-${deviceSpan}-01` } } },
    )
    await client.endAsync()
    const expected = [
      'mqtt.receive',
      'bus.publish ReadingBatch',
      'inference.score ReadingBatch',
      'clickhouse.insert telemetry',
      'clickhouse.insert inferences',
      'watch.deliver ReadingBatch',
      'watch.deliver InferenceBatch',
    ]
    await eventually(
      async () => expected.every((n) => byName(traceId, n)),
      30_000,
      `spans ${expected.join(', ')} in trace ${traceId}`,
    ).catch((err: Error) => {
      throw new Error(
        `${err.message}; got ${collector.spans.filter((s) => s.traceId === traceId).map((s) => s.name)}`,
      )
    })
    abort.abort()
    await watching
    assert.ok(events.includes('reading') && events.includes('inference'))
    const span = (n: string) => byName(traceId, n)
    assert.equal(span('mqtt.receive').parentSpanId, deviceSpan, "the device's span is the reading's parent")
    assert.equal(span('mqtt.receive').service, 'vigil-bridge')
    assert.equal(span('bus.publish ReadingBatch').parentSpanId, span('mqtt.receive').spanId)
    assert.equal(span('inference.score ReadingBatch').parentSpanId, span('bus.publish ReadingBatch').spanId)
    assert.equal(span('inference.score ReadingBatch').service, 'vigil-inference')
    assert.equal(span('clickhouse.insert telemetry').parentSpanId, span('bus.publish ReadingBatch').spanId)
    assert.equal(
      span('clickhouse.insert inferences').parentSpanId,
      span('inference.score ReadingBatch').spanId,
    )
    assert.equal(span('clickhouse.insert telemetry').service, 'vigil-query')
    assert.equal(span('watch.deliver ReadingBatch').parentSpanId, span('bus.publish ReadingBatch').spanId)
    assert.equal(
      span('watch.deliver InferenceBatch').parentSpanId,
      span('inference.score ReadingBatch').spanId,
    )
  })

  it("continues a caller's W3C traceparent through an RPC, links a batch to every reading it carries, and stamps logs", async () => {
    const [, ingest] = services
    const traceId = randomBytes(16).toString('hex')
    const caller = randomBytes(8).toString('hex')
    const client = createClient(IngestService, createGrpcTransport({ baseUrl: ingest!.url }))
    const [spec] = syntheticFleet(1, 2)
    const rng = new Rng(5)
    // Two concurrent calls for devices of one partition share a batch: one trace is its parent, the other a link.
    const other = randomBytes(16).toString('hex')
    const reading = (deviceId: string, seq: number) => ({
      deviceId,
      ts: { seconds: BigInt(Math.floor(Date.now() / 1000)), nanos: 0 },
      sensors: normalReading(spec!, rng),
      seq: BigInt(seq),
    })
    await Promise.all([
      client.publish(
        { reading: reading('rpc-trace', 1) },
        { headers: { traceparent: `00-${traceId}-${caller}-01` } },
      ),
      client.publish(
        { reading: reading('rpc-trace', 2) },
        { headers: { traceparent: `00-${other}-${randomBytes(8).toString('hex')}-01` } },
      ),
    ])
    const rpc = 'rpc vigil.ingest.v1.IngestService/Publish'
    await eventually(
      async () =>
        Boolean(
          byName(traceId, rpc) &&
            byName(other, rpc) &&
            collector.spans.some(
              (s) =>
                s.name === 'inference.score ReadingBatch' && (s.traceId === traceId || s.traceId === other),
            ),
        ),
      30_000,
      'the RPC spans and the scoring of their batch',
    )
    assert.equal(byName(traceId, rpc).parentSpanId, caller)
    assert.equal(byName(traceId, rpc).service, 'vigil-ingest')
    const batch = collector.spans.find(
      (s) => s.name === 'bus.publish ReadingBatch' && (s.traceId === traceId || s.traceId === other),
    ) as CollectedSpan
    const first = batch.traceId === traceId ? byName(traceId, rpc) : byName(other, rpc)
    const second = batch.traceId === traceId ? byName(other, rpc) : byName(traceId, rpc)
    assert.equal(batch.parentSpanId, first.spanId, 'the batch is a child of its first reading')
    assert.deepEqual(
      batch.links,
      [{ traceId: second.traceId, spanId: second.spanId }],
      'and links to the other',
    )
    assert.match(
      ingest!.output(),
      new RegExp(`"trace_id":"${first.traceId}"`),
      'log lines inside a span carry its ids',
    )
  })
})
