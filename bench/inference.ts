// `npm run bench -- inference [--seconds N] [--readings N]`: the inference service against the
// bare pieces it is made of, measured in one run on this machine.
//   1. bare ONNX Runtime session.run, rows/s at batch 1, 256 and 1024 (main thread, one session);
//   2. Infer calls/s with 64 in flight, next to a bare connect-node HTTP/2 server answering a
//      trivial RPC (vigil.kit.v1.EchoService) with 64 in flight: the connect-node unary ceiling;
//      both over the Connect protocol on HTTP/2, binary;
//   3. InferBatch rows/s (1,000 requests per call, 4 calls in flight);
//   4. the async worker: readings/s scoring a pre-filled TELEMETRY stream (batches of 500) into
//      INFERENCES, next to a bare JetStream consume + ack of the same stream.

import { create } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { type Client, createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { AckPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import * as ort from 'onnxruntime-node'
import { InferenceService } from '../gen/vigil/inference/v1/inference_pb.js'
import { EchoService } from '../gen/vigil/kit/v1/kit_pb.js'
import { ReadingSchema } from '../gen/vigil/telemetry/v1/telemetry_pb.js'
import { encodeReadingBatch } from '../services/common/codec.js'
import { createLogger } from '../services/common/log.js'
import { BUS, connectNats, provisionBus, rawSubject } from '../services/common/nats.js'
import { buildOnnx, GRAPH } from '../services/inference/model/onnx.js'
import {
  normalReading,
  Rng,
  type SyntheticDevice,
  syntheticFleet,
} from '../services/inference/model/synthetic.js'
import { trainingSet, trainModel } from '../services/inference/model/train.js'
import { ModelRegistry } from '../services/inference/registry.js'
import { WORKER_DURABLE } from '../services/inference/worker.js'
import { startNats } from '../test/fixtures/nats.js'
import { startChild } from '../test/fixtures/process.js'
import { type ServiceProcess, startService } from '../test/fixtures/services.js'
import { fmt, say } from './report.js'
import { processUsage } from './usage.js'

export interface InferenceBenchOptions {
  seconds: number
  readings: number
}

const log = createLogger({ service: 'cli', logLevel: 'silent' })
// BENCH_INFERENCE_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the service (every thread).
const nodeArgs = (process.env.BENCH_INFERENCE_NODE_ARGS ?? '').split(' ').filter(Boolean)

/** Runs `call` with `inFlight` concurrent loops for `seconds`; calls/s and latency percentiles. */
async function closedLoop(
  seconds: number,
  inFlight: number,
  call: () => Promise<unknown>,
): Promise<{ perSecond: number; p50: number; p99: number; errors: number }> {
  const latencies: number[] = []
  let errors = 0
  const end = performance.now() + seconds * 1000
  const started = performance.now()
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (performance.now() < end) {
        const t = performance.now()
        try {
          await call()
          latencies.push(performance.now() - t)
        } catch {
          errors++
        }
      }
    }),
  )
  const elapsed = (performance.now() - started) / 1000
  latencies.sort((a, b) => a - b)
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0
  return { perSecond: latencies.length / elapsed, p50: at(0.5), p99: at(0.99), errors }
}

export async function benchInference(opts: InferenceBenchOptions): Promise<void> {
  const rng = new Rng(1)
  const fleet = syntheticFleet(100, 3)
  const trainRows = fleet.flatMap((d) =>
    Array.from({ length: 20 }, (_, i) => ({ sensors: normalReading(d, rng), tsMs: i })),
  )
  const spec = trainModel(trainingSet(trainRows, 'bench'), { scope: 'fleet' })
  const file = buildOnnx(spec)
  const f = spec.features.length
  const row = (d: SyntheticDevice) => normalReading(d, rng)
  say(
    `inference benchmark: ${f} features, ${spec.eigenvalues.length} components, ${opts.seconds} s per figure`,
  )

  // 1. Bare session.run.
  const session = await ort.InferenceSession.create(file, { intraOpNumThreads: 1, interOpNumThreads: 1 })
  const bare: Record<number, number> = {}
  for (const batch of [1, 256, 1024]) {
    const values = Float64Array.from(
      Array.from({ length: batch }, (_, i) =>
        spec.features.map((name) => row(fleet[i % fleet.length] as SyntheticDevice)[name as 'pressure']),
      ).flat(),
    )
    const tensor = new ort.Tensor('float64', values, [batch, f])
    let rows = 0
    const end = performance.now() + Math.min(opts.seconds, 3) * 1000
    const t0 = performance.now()
    while (performance.now() < end) {
      await session.run({ [GRAPH.input]: tensor })
      rows += batch
    }
    bare[batch] = rows / ((performance.now() - t0) / 1000)
    say(`  bare session.run, batch ${String(batch).padStart(4)}: ${fmt(bare[batch] as number)} rows/s`)
  }
  await session.release()

  const nats = await startNats()
  const nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
  await provisionBus(nc, log)
  const registry = await ModelRegistry.open(nc)
  const stored = await registry.store(file)
  await registry.setAlias('fleet', 'production', stored.spec.version)
  let service: ServiceProcess | undefined
  let echo: ServiceProcess | undefined
  try {
    // 2. Infer against the trivial-RPC ceiling of a bare connect-node server.
    const transport = (baseUrl: string) =>
      createConnectTransport({ baseUrl, httpVersion: '2', useBinaryFormat: true })
    echo = await startEcho()
    const echoClient = createClient(EchoService, transport(echo.url))
    await closedLoop(1, 64, () => echoClient.echo({ message: 'x' })) // warm-up
    const echoBefore = processUsage(echo.proc.pid!)
    const ceiling = await closedLoop(opts.seconds, 64, () => echoClient.echo({ message: 'x' }))
    const echoCores = (processUsage(echo.proc.pid!).cpuSeconds - echoBefore.cpuSeconds) / opts.seconds
    await echo.stop()
    echo = undefined
    say(
      `  bare connect-node trivial RPC (64 in flight): ${fmt(ceiling.perSecond)} calls/s, p99 ${ceiling.p99.toFixed(1)} ms, ` +
        `server ${echoCores.toFixed(2)} cores (${((echoCores / ceiling.perSecond) * 1e6).toFixed(0)} µs CPU per call)`,
    )

    service = await startService(
      'inference',
      {
        VIGIL_NATS_URL: nats.url,
        VIGIL_BOOTSTRAP_ROWS: '0',
        VIGIL_INFERENCE_WORKER: 'false',
        VIGIL_LOG_LEVEL: 'warn',
      },
      { nodeArgs },
    )
    const client: Client<typeof InferenceService> = createClient(InferenceService, transport(service.url))
    const request = (i: number) => {
      const d = fleet[i % fleet.length] as SyntheticDevice
      return { deviceId: d.id, features: row(d) }
    }
    const requests = Array.from({ length: 4096 }, (_, i) => request(i))
    let k = 0
    await closedLoop(1, 64, () => client.infer(requests[k++ % requests.length]!)) // warm-up
    const before = processUsage(service.proc.pid!)
    const infer = await closedLoop(opts.seconds, 64, () => client.infer(requests[k++ % requests.length]!))
    const after = processUsage(service.proc.pid!)
    const inferCores = (after.cpuSeconds - before.cpuSeconds) / opts.seconds
    say(
      `  Infer (64 in flight): ${fmt(infer.perSecond)} calls/s = ${(infer.perSecond / ceiling.perSecond).toFixed(2)} × the ceiling, ` +
        `p50 ${infer.p50.toFixed(1)} ms, p99 ${infer.p99.toFixed(1)} ms, ${infer.errors} errors, ` +
        `server ${inferCores.toFixed(2)} cores (${((inferCores / infer.perSecond) * 1e6).toFixed(0)} µs CPU per call)`,
    )

    // 3. InferBatch.
    const batchRequest = { requests: requests.slice(0, 1000) }
    const batch = await closedLoop(opts.seconds, 4, () => client.inferBatch(batchRequest))
    say(
      `  InferBatch (1,000 per call, 4 in flight): ${fmt(batch.perSecond * 1000)} rows/s, p99 ${batch.p99.toFixed(1)} ms per call`,
    )
    await service.stop()
    service = undefined

    // 4. The async worker on a pre-filled stream, next to a bare consume + ack of it.
    const js = jetstream(nc)
    const jsm = await jetstreamManager(nc)
    const perBatch = 500
    const batches = Math.ceil(opts.readings / perBatch)
    const t0 = Date.now() - 3600_000
    for (let b = 0; b < batches; b++) {
      const readings = Array.from({ length: perBatch }, (_, i) => {
        const d = fleet[(b * perBatch + i) % fleet.length] as SyntheticDevice
        return create(ReadingSchema, {
          eventId: `${d.id}:seq:${b * perBatch + i}`,
          deviceId: d.id,
          ts: timestampFromMs(t0 + b * 10 + i),
          sensors: row(d),
          meta: { site: d.site },
          seq: BigInt(b * perBatch + i),
          receivedAt: timestampFromMs(t0 + b * 10 + i),
        })
      })
      await js.publish(rawSubject(b % 16), encodeReadingBatch(`bench-${b}`, readings, 'bench'), {
        msgID: `bench-${b}`,
      })
    }
    const readings = batches * perBatch
    say(`  pre-filled TELEMETRY with ${fmt(readings)} readings in ${fmt(batches)} batches of ${perBatch}`)

    await jsm.consumers.add(BUS.streams.telemetry, { durable_name: 'bare', ack_policy: AckPolicy.Explicit })
    const bareStart = performance.now()
    const consumer = await js.consumers.get(BUS.streams.telemetry, 'bare')
    const messages = await consumer.consume({ max_messages: 64 })
    let seen = 0
    for await (const m of messages) {
      m.ack()
      if (++seen === batches) break
    }
    await messages.close()
    const bareRate = readings / ((performance.now() - bareStart) / 1000)
    say(`  bare JetStream consume + ack: ${fmt(bareRate)} readings/s (${fmt(bareRate / perBatch)} batches/s)`)

    // The worker scores with the fleet model alone, then with a model of its own for every device
    // (trained and promoted before it starts: no training during a measure). The device bootstrap
    // is off in both, so what is measured is scoring only.
    const runWorker = async (label: string) => {
      await jsm.consumers.delete(BUS.streams.telemetry, WORKER_DURABLE).catch(() => undefined)
      // A new INFERENCES stream: a purged one would still drop the same msgIDs as duplicates.
      await jsm.streams.delete(BUS.streams.inferences)
      await provisionBus(nc, log)
      service = await startService(
        'inference',
        {
          VIGIL_NATS_URL: nats.url,
          VIGIL_BOOTSTRAP_ROWS: '0',
          VIGIL_BOOTSTRAP_DEVICE_ROWS: '0',
          VIGIL_LOG_LEVEL: 'warn',
          ...(process.env.VIGIL_INFERENCE_CONCURRENCY
            ? { VIGIL_INFERENCE_CONCURRENCY: process.env.VIGIL_INFERENCE_CONCURRENCY }
            : {}),
        },
        { nodeArgs },
      )
      const workerStart = Date.now()
      const cpuBefore = processUsage(service.proc.pid!).cpuSeconds
      const natsBefore = processUsage(nats.pid()!).cpuSeconds
      for (;;) {
        const info = await jsm.streams.info(BUS.streams.inferences)
        if (info.state.messages >= batches) break
        if (Date.now() - workerStart > 600_000) throw new Error('the worker did not finish in 10 minutes')
        await new Promise((r) => setTimeout(r, 100))
      }
      const elapsed = (Date.now() - workerStart) / 1000
      const info = await jsm.streams.info(BUS.streams.inferences)
      const span = (Date.parse(info.state.last_ts) - Date.parse(info.state.first_ts)) / 1000
      const rate = (readings * (batches - 1)) / batches / Math.max(span, 1e-3)
      const usage = processUsage(service.proc.pid!)
      const cores = (usage.cpuSeconds - cpuBefore) / elapsed
      const natsCores = (processUsage(nats.pid()!).cpuSeconds - natsBefore) / elapsed
      await service.stop()
      service = undefined
      say(
        `  async worker, ${label}: ${fmt(rate)} readings/s = ${(rate / bareRate).toFixed(2)} × bare consume + ack ` +
          `(first to last InferenceBatch on the bus), worker ${cores.toFixed(2)} cores, nats-server ${natsCores.toFixed(2)}, ` +
          `peak RSS ${usage.peakRssMb.toFixed(0)} MB`,
      )
      return { rate, cores }
    }
    const fleetRun = await runWorker('fleet model')
    for (const d of fleet) {
      const rows = Array.from({ length: 200 }, (_, i) => ({ sensors: normalReading(d, rng), tsMs: i }))
      const own = await registry.store(
        buildOnnx(trainModel(trainingSet(rows, 'bench'), { scope: 'device', scopeKey: d.id })),
      )
      await registry.setAlias(own.spec.name, 'production', own.spec.version)
    }
    say(`  trained and promoted a model for each of the ${fleet.length} devices`)
    const deviceRun = await runWorker(`a model per device (${fleet.length})`)
    say('')
    say('| figure | value | reference | ratio |')
    say('|---|---|---|---|')
    say(
      `| bare session.run batch 1 / 256 / 1024 | ${fmt(bare[1]!)} / ${fmt(bare[256]!)} / ${fmt(bare[1024]!)} rows/s | | |`,
    )
    say(
      `| Infer, 64 in flight | ${fmt(infer.perSecond)} calls/s, p99 ${infer.p99.toFixed(1)} ms | trivial RPC ${fmt(ceiling.perSecond)} calls/s | ${(infer.perSecond / ceiling.perSecond).toFixed(2)} (target ≥ 0.8) |`,
    )
    say(
      `| server CPU per call | Infer ${((inferCores / infer.perSecond) * 1e6).toFixed(0)} µs | trivial RPC ${((echoCores / ceiling.perSecond) * 1e6).toFixed(0)} µs | ${(echoCores / ceiling.perSecond / (inferCores / infer.perSecond)).toFixed(2)} |`,
    )
    say(`| InferBatch, 1,000 per call | ${fmt(batch.perSecond * 1000)} rows/s | | |`)
    for (const [label, run] of [
      ['fleet model', fleetRun],
      [`a model per device (${fleet.length})`, deviceRun],
    ] as const)
      say(
        `| async worker, batches of 500, ${label} | ${fmt(run.rate)} readings/s | bare consume + ack ${fmt(bareRate)} readings/s | ${(run.rate / bareRate).toFixed(2)} (target ≥ 200k readings/s), ${run.cores.toFixed(2)} cores |`,
      )
  } finally {
    await service?.stop()
    await echo?.stop()
    await nc.drain()
    await nats.stop()
  }
}

/** The bare echo server as its own process (the trivial-RPC ceiling). */
async function startEcho(): Promise<ServiceProcess> {
  const { freePort } = await import('../test/fixtures/ports.js')
  const port = await freePort()
  const entry = new URL('./bare-echo-server.ts', import.meta.url).pathname
  const child = startChild(process.execPath, ['--import', 'tsx', entry], {
    env: { ...process.env, VIGIL_PORT: String(port), VIGIL_LOG_LEVEL: 'warn' },
  })
  const url = `http://127.0.0.1:${port}`
  for (let i = 0; i < 150; i++) {
    if (child.output().includes('listening')) return { ...child, url, port }
    await new Promise((r) => setTimeout(r, 100))
  }
  throw new Error(`echo server did not start:\n${child.output()}`)
}
