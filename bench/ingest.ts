import { readFileSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { fromBinary } from '@bufbuild/protobuf'
import { jetstream } from '@nats-io/jetstream'
import { ReadingBatchSchema } from '../gen/vigil/telemetry/v1/telemetry_pb.js'
import { type InboundMessage, MqttSession } from '../services/bridge/mqtt-session.js'
import { createLogger } from '../services/common/log.js'
import { connectNats, provisionBus } from '../services/common/nats.js'
import { startMosquitto } from '../test/fixtures/mosquitto.js'
import { startNats } from '../test/fixtures/nats.js'
import { startService } from '../test/fixtures/services.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })

export interface IngestBenchOptions {
  readings: number
  devices: number
  connections: number
}

const say = (line: string) => process.stdout.write(`${line}\n`)

/** CPU seconds (user + system) and peak RSS of a process, from /proc. */
function processUsage(pid: number): { cpuSeconds: number; peakRssMb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12])
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0)
  return { cpuSeconds: ticks / 100, peakRssMb: hwm / 1024 }
}

/** The load generator on a worker thread; resolves when every message was acknowledged by the broker. */
function loadInWorker(
  opts: IngestBenchOptions & { port: number; prefix: string; topicPrefix: string },
): Promise<void> {
  const worker = new Worker(new URL('./load-worker.mjs', import.meta.url), {
    workerData: { ...opts, total: opts.readings },
  })
  return new Promise((resolve, reject) => {
    worker.once('message', () => resolve())
    worker.once('error', reject)
  })
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!
}

/**
 * `npm run bench -- ingest`: devices → mosquitto → bridge → JetStream, against the bare ceilings
 * measured in the same run with the same load generator.
 */
export async function benchIngest(opts: IngestBenchOptions): Promise<Record<string, number>> {
  say(
    `ingest benchmark: ${opts.readings} readings from ${opts.devices} devices over ${opts.connections} connections`,
  )
  const [nats, broker] = await Promise.all([startNats(), startMosquitto()])
  const nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
  await provisionBus(nc, log)
  const results: Record<string, number> = {}
  try {
    // 1. Bare mosquitto: the same generator → one subscriber that acknowledges at once (QoS1).
    say('1/3 bare mosquitto QoS1 → one subscriber …')
    let received = 0
    const pendingAcks: InboundMessage[] = []
    let done: () => void = () => {}
    const allReceived = new Promise<void>((resolve) => {
      done = resolve
    })
    const subscriber: MqttSession = new MqttSession({
      url: broker.url,
      clientId: 'bench-ceiling',
      topicFilter: 'ceiling/+/telemetry',
      shareGroup: 'bench',
      log,
      // Bare: acknowledge every message at once, in one write per turn of the event loop, as the
      // bridge does after its JetStream acks.
      onMessage: (msg) => {
        pendingAcks.push(msg)
        if (pendingAcks.length === 1) setImmediate(() => subscriber.ackAll(pendingAcks.splice(0)))
        if (++received === opts.readings) done()
      },
    })
    await subscriber.start()
    const ceilingStart = process.hrtime.bigint()
    await loadInWorker({ ...opts, port: broker.port, prefix: 'c', topicPrefix: 'ceiling' })
    await allReceived
    const ceilingSeconds = Number(process.hrtime.bigint() - ceilingStart) / 1e9
    await subscriber.stop()
    results.mosquittoCeilingPerSec = opts.readings / ceilingSeconds

    // 2. Bare JetStream: async publishes of single ~200 B messages.
    say('2/3 bare JetStream async publish …')
    const js = jetstream(nc)
    const body = new Uint8Array(200).fill(7)
    const jsCount = Math.min(opts.readings, 100_000)
    const jsStart = process.hrtime.bigint()
    const window: Promise<unknown>[] = []
    for (let i = 0; i < jsCount; i++) {
      window.push(js.publish(`telemetry.raw.${i % 16}`, body, { msgID: `bench-${i}` }))
      if (window.length >= 5_000) await Promise.all(window.splice(0, window.length))
    }
    await Promise.all(window)
    results.jetstreamPublishPerSec = jsCount / (Number(process.hrtime.bigint() - jsStart) / 1e9)

    // 3. The bridge, from its production entry point, in its own process.
    say('3/3 devices → mosquitto → bridge → JetStream …')
    const bridge = await startService('bridge', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_MQTT_URL: broker.url,
      VIGIL_DEVICE_RATE: '0',
      VIGIL_LOG_LEVEL: 'warn',
      // The bridge's batching knobs, when given to the benchmark.
      ...Object.fromEntries(
        ['VIGIL_BATCH_MAX', 'VIGIL_BATCH_LINGER_MS', 'VIGIL_PARTITIONS']
          .filter((k) => process.env[k])
          .map((k) => [k, process.env[k]!]),
      ),
    })
    const latencies: number[] = []
    let stored = 0
    let storedAll: () => void = () => {}
    const allStored = new Promise<void>((resolve) => {
      storedAll = resolve
    })
    // Stored batches reach core subscribers as JetStream stores them; every tenth is decoded for latency.
    let batchNo = 0
    const sub = nc.subscribe('telemetry.raw.>', {
      callback: (_err, msg) => {
        const sample = batchNo++ % 10 === 0
        const batch = fromBinary(ReadingBatchSchema, msg.data)
        stored += batch.readings.length
        if (sample) {
          const now = Date.now()
          // Each reading's ts is its send time (ms precision).
          for (const r of batch.readings)
            latencies.push(now - (Number(r.ts!.seconds) * 1000 + r.ts!.nanos / 1e6))
        }
        if (stored >= opts.readings) storedAll()
      },
    })
    const before = processUsage(bridge.proc.pid!)
    const runStart = process.hrtime.bigint()
    await loadInWorker({ ...opts, port: broker.port, prefix: 'b', topicPrefix: 'devices' })
    await allStored
    const runSeconds = Number(process.hrtime.bigint() - runStart) / 1e9
    const after = processUsage(bridge.proc.pid!)
    sub.unsubscribe()
    await bridge.stop()
    latencies.sort((a, b) => a - b)
    results.bridgePerSec = opts.readings / runSeconds
    results.ratioToMosquitto = results.bridgePerSec / results.mosquittoCeilingPerSec
    results.ratioToJetStreamMsgs = results.bridgePerSec / results.jetstreamPublishPerSec
    results.p50LatencyMs = percentile(latencies, 50)
    results.p99LatencyMs = percentile(latencies, 99)
    results.bridgeCpuCores = (after.cpuSeconds - before.cpuSeconds) / runSeconds
    results.bridgePeakRssMb = after.peakRssMb
    results.readingsStored = stored

    say('')
    say('| measure | value |')
    say('|---|---|')
    say(`| bare mosquitto QoS1 → one subscriber | ${fmt(results.mosquittoCeilingPerSec)} msgs/s |`)
    say(`| bare JetStream async publish (200 B) | ${fmt(results.jetstreamPublishPerSec)} msgs/s |`)
    say(`| devices → mosquitto → bridge → JetStream | ${fmt(results.bridgePerSec)} readings/s |`)
    say(`| bridge / bare mosquitto | ${results.ratioToMosquitto.toFixed(2)} |`)
    say(`| bridge / bare JetStream messages | ${results.ratioToJetStreamMsgs.toFixed(2)} |`)
    say(`| publish → stored latency p50 / p99 | ${results.p50LatencyMs} ms / ${results.p99LatencyMs} ms |`)
    say(`| bridge CPU | ${results.bridgeCpuCores.toFixed(2)} cores |`)
    say(`| bridge peak RSS | ${results.bridgePeakRssMb.toFixed(0)} MB |`)
    say(`| readings stored / sent | ${stored} / ${opts.readings} |`)
    return results
  } finally {
    await nc.drain()
    await Promise.all([nats.stop(), broker.stop()])
  }
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US')
}
