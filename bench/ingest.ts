import { Worker } from 'node:worker_threads'
import { BinaryReader } from '@bufbuild/protobuf/wire'
import { jetstream } from '@nats-io/jetstream'
import { type InboundMessage, MqttSession } from '../services/bridge/mqtt-session.js'
import { decodeReadingBatch } from '../services/common/codec.js'
import { createLogger } from '../services/common/log.js'
import { connectNats, type NatsConnection, provisionBus } from '../services/common/nats.js'
import { startMosquitto } from '../test/fixtures/mosquitto.js'
import { startNats } from '../test/fixtures/nats.js'
import { type ServiceProcess, startService } from '../test/fixtures/services.js'
import { fmt, median, percentile, say } from './report.js'
import { processUsage } from './usage.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })

export interface IngestBenchOptions {
  readings: number
  devices: number
  connections: number
  /** Ceiling and bridge runs alternate this many times; medians are reported. */
  rounds: number
}

/** The load generator on a worker thread; resolves when the broker acknowledged every message. */
export function loadInWorker(
  opts: IngestBenchOptions & { port: number; prefix: string; topicPrefix: string; ratePerSec?: number },
): Promise<{ seconds: number; behindMs: number }> {
  const worker = new Worker(new URL('./load-worker.mjs', import.meta.url), {
    workerData: { ...opts, total: opts.readings },
  })
  return new Promise((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
  })
}

/** Generator → mosquitto → one subscriber that only acknowledges (in one write per event-loop turn). */
export async function ceilingRound(opts: IngestBenchOptions, brokerUrl: string, port: number, round: number) {
  let received = 0
  const pendingAcks: InboundMessage[] = []
  let done: () => void = () => {}
  const allReceived = new Promise<void>((resolve) => {
    done = resolve
  })
  const subscriber: MqttSession = new MqttSession({
    url: brokerUrl,
    clientId: `bench-ceiling-${round}`,
    topicFilter: `ceiling${round}/+/telemetry`,
    shareGroup: 'bench',
    log,
    onMessage: (msg) => {
      pendingAcks.push(msg)
      if (pendingAcks.length === 1) setImmediate(() => subscriber.ackAll(pendingAcks.splice(0)))
      if (++received === opts.readings) done()
    },
  })
  await subscriber.start()
  const started = process.hrtime.bigint()
  await loadInWorker({ ...opts, port, prefix: `c${round}`, topicPrefix: `ceiling${round}` })
  await allReceived
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  await subscriber.stop()
  return opts.readings / seconds
}

/** Generator → mosquitto → bridge → JetStream, until every reading is in a stored batch. */
async function bridgeRound(
  opts: IngestBenchOptions,
  nc: NatsConnection,
  bridge: ServiceProcess,
  port: number,
  round: number,
) {
  const latencies: number[] = []
  let stored = 0
  let storedAll: () => void = () => {}
  const allStored = new Promise<void>((resolve) => {
    storedAll = resolve
  })
  const prefix = `b${round}`
  // Batches reach core subscribers as JetStream stores them (only this round's readings: the last
  // round ended when all of its were stored). Each batch's readings are counted without decoding
  // them, and every tenth batch is decoded for latency (each reading's ts is its send time): this
  // process shares the machine, and decoding every batch here would be charged to the bridge.
  let batchNo = 0
  const sub = nc.subscribe('telemetry.raw.>', {
    callback: (_err, msg) => {
      stored += readingsIn(msg.data)
      if (batchNo++ % 10 === 0) {
        const now = Date.now()
        for (const r of decodeReadingBatch(msg.data).readings)
          if (r.deviceId.startsWith(`${prefix}-`))
            latencies.push(now - (Number(r.ts!.seconds) * 1000 + r.ts!.nanos / 1e6))
      }
      if (stored >= opts.readings) storedAll()
    },
  })
  const before = processUsage(bridge.proc.pid!)
  const started = process.hrtime.bigint()
  await loadInWorker({ ...opts, port, prefix, topicPrefix: 'devices' })
  await allStored
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const after = processUsage(bridge.proc.pid!)
  sub.unsubscribe()
  latencies.sort((a, b) => a - b)
  return {
    perSec: opts.readings / seconds,
    cpuCores: (after.cpuSeconds - before.cpuSeconds) / seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    stored,
  }
}

/** The number of readings in a ReadingBatch (its field 2), without decoding them. */
function readingsIn(bytes: Uint8Array): number {
  const r = new BinaryReader(bytes)
  let n = 0
  while (r.pos < r.len) {
    const [no, wt] = r.tag()
    if (no === 2) n++
    r.skip(wt, no)
  }
  return n
}

/** A pause before each measure, for the last one's background work (JetStream's writes) to end. */
const settle = () => new Promise((resolve) => setTimeout(resolve, 2_000))

/** Bare JetStream async publish of 200-byte messages (5,000 in flight): messages per second. */
export async function jetstreamCeiling(nc: NatsConnection, count: number): Promise<number> {
  const js = jetstream(nc)
  const body = new Uint8Array(200).fill(7)
  const started = process.hrtime.bigint()
  const window: Promise<unknown>[] = []
  for (let i = 0; i < count; i++) {
    window.push(js.publish(`telemetry.raw.${i % 16}`, body, { msgID: `bench-${started}-${i}` }))
    if (window.length >= 5_000) await Promise.all(window.splice(0, window.length))
  }
  await Promise.all(window)
  return count / (Number(process.hrtime.bigint() - started) / 1e9)
}

/**
 * `npm run bench -- ingest`: devices → mosquitto → bridge → JetStream, against the bare ceilings
 * measured in the same run with the same load generator. Ceiling and bridge runs alternate, so
 * both see the same machine; the ratio reported is the median of the per-round ratios.
 */
export async function benchIngest(opts: IngestBenchOptions): Promise<Record<string, number>> {
  say(
    `ingest benchmark: ${fmt(opts.readings)} readings per run from ${fmt(opts.devices)} devices over ` +
      `${opts.connections} connections, ${opts.rounds} rounds`,
  )
  const [nats, broker] = await Promise.all([startNats(), startMosquitto()])
  const nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
  await provisionBus(nc, log)
  let bridge: ServiceProcess | undefined
  try {
    say('bare JetStream async publish …')
    const jetstreamPerSec = await jetstreamCeiling(nc, Math.min(opts.readings, 100_000))

    // The bridge from its production entry point, in its own process.
    bridge = await startService(
      'bridge',
      {
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
      },
      { nodeArgs: (process.env.BENCH_BRIDGE_NODE_ARGS ?? '').split(' ').filter(Boolean) },
    )
    const rounds: { ceiling: number; bridge: Awaited<ReturnType<typeof bridgeRound>> }[] = []
    for (let round = 1; round <= opts.rounds; round++) {
      await settle()
      const ceiling = await ceilingRound(opts, broker.url, broker.port, round)
      await settle()
      const run = await bridgeRound(opts, nc, bridge, broker.port, round)
      rounds.push({ ceiling, bridge: run })
      say(
        `round ${round}: bare mosquitto ${fmt(ceiling)} msgs/s, bridge ${fmt(run.perSec)} readings/s ` +
          `(${(run.perSec / ceiling).toFixed(2)})`,
      )
    }
    const peakRssMb = processUsage(bridge.proc.pid!).peakRssMb
    const results = {
      mosquittoCeilingPerSec: median(rounds.map((r) => r.ceiling)),
      jetstreamPublishPerSec: jetstreamPerSec,
      bridgePerSec: median(rounds.map((r) => r.bridge.perSec)),
      ratioToMosquitto: median(rounds.map((r) => r.bridge.perSec / r.ceiling)),
      ratioMin: Math.min(...rounds.map((r) => r.bridge.perSec / r.ceiling)),
      ratioMax: Math.max(...rounds.map((r) => r.bridge.perSec / r.ceiling)),
      p50LatencyMs: median(rounds.map((r) => r.bridge.p50)),
      p99LatencyMs: median(rounds.map((r) => r.bridge.p99)),
      bridgeCpuCores: median(rounds.map((r) => r.bridge.cpuCores)),
      bridgePeakRssMb: peakRssMb,
      readingsStored: rounds.reduce((n, r) => n + r.bridge.stored, 0),
      readingsSent: opts.readings * opts.rounds,
    }
    say('')
    say('| measure (median of rounds) | value |')
    say('|---|---|')
    say(`| bare mosquitto QoS1 → one subscriber | ${fmt(results.mosquittoCeilingPerSec)} msgs/s |`)
    say(`| bare JetStream async publish (200 B, one message per publish) | ${fmt(jetstreamPerSec)} msgs/s |`)
    say(`| devices → mosquitto → bridge → JetStream | ${fmt(results.bridgePerSec)} readings/s |`)
    say(
      `| bridge / bare mosquitto | ${results.ratioToMosquitto.toFixed(2)} ` +
        `(rounds ${results.ratioMin.toFixed(2)}–${results.ratioMax.toFixed(2)}) |`,
    )
    say(`| bridge / bare JetStream messages | ${(results.bridgePerSec / jetstreamPerSec).toFixed(2)} |`)
    say(`| publish → stored latency p50 / p99 | ${results.p50LatencyMs} ms / ${results.p99LatencyMs} ms |`)
    say(`| bridge CPU | ${results.bridgeCpuCores.toFixed(2)} cores |`)
    say(`| bridge peak RSS | ${results.bridgePeakRssMb.toFixed(0)} MB |`)
    say(`| readings stored / sent | ${fmt(results.readingsStored)} / ${fmt(results.readingsSent)} |`)
    return results
  } finally {
    await bridge?.stop()
    await nc.drain()
    await Promise.all([nats.stop(), broker.stop()])
  }
}
