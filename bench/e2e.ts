// `npm run bench -- e2e`: the whole pipeline — MQTT QoS1 publish → mosquitto → bridge → JetStream
// → inference → ClickHouse (and Watch) — at increasing offered load, against the bare ceilings
// measured in the same run with the same lean generator. Each step is a fleet of N devices sending
// one reading (3 sensors) per second; the stair stops at the first step the pipeline cannot keep
// up with. Writes the table and an SVG plot under bench/results/.
import { mkdirSync, writeFileSync } from 'node:fs'
import { cpus, totalmem } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { timestampMs } from '@bufbuild/protobuf/wkt'
import { createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { QueryService } from '../gen/vigil/query/v1/query_pb.js'
import { openClickHouse } from '../services/common/clickhouse.js'
import { sleep } from '../services/common/health.js'
import { createLogger } from '../services/common/log.js'
import { BUS, connectNats, provisionBus } from '../services/common/nats.js'
import { eventually } from '../test/fixtures/bus.js'
import { metricSum } from '../test/fixtures/metrics.js'
import { startMosquitto } from '../test/fixtures/mosquitto.js'
import { startNats } from '../test/fixtures/nats.js'
import { tempDir } from '../test/fixtures/process.js'
import { type ServiceProcess, startService } from '../test/fixtures/services.js'
import { ceilingRound, jetstreamCeiling, loadInWorker } from './ingest.js'
import { fmt, percentile, say } from './report.js'
import { processUsage } from './usage.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })
const SENSORS_PER_READING = 3
const DEVICE_STEPS = [
  1_000, 2_500, 5_000, 7_500, 10_000, 12_500, 15_000, 20_000, 30_000, 40_000, 50_000, 70_000, 100_000,
]
/** Devices of each step followed on Watch (readings and inferences). */
const WATCHED = 20

export interface EndToEndBenchOptions {
  /** Seconds of load per step. */
  seconds: number
  /** The last step's fleet size. */
  maxDevices: number
  connections: number
}

export interface StepResult {
  devices: number
  offeredPerSec: number
  sustainedPerSec: number
  keptUp: boolean
  /** Device publish → row in ClickHouse (stored_at − ts), from the store after the run. */
  storeP50: number
  storeP99: number
  /** Device publish → the reading, and its inference, on a Watch stream. */
  watchReadingP99: number
  watchInferenceP50: number
  watchInferenceP99: number
  cpu: Record<string, number>
  rssMb: Record<string, number>
}

export async function benchEndToEnd(opts: EndToEndBenchOptions): Promise<void> {
  const machine = `${cpus().length} × ${cpus()[0]?.model.trim()}, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`
  say(`end-to-end benchmark on ${machine}`)
  say(`steps of ${opts.seconds} s, one reading (${SENSORS_PER_READING} sensors) per device per second`)
  const [nats, broker] = await Promise.all([startNats(), startMosquitto()])
  const nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
  await provisionBus(nc, log)
  const dataDir = tempDir('bench-e2e')
  const services: ServiceProcess[] = []
  const steps: StepResult[] = []
  let ceiling = 0
  let jetstreamPerSec = 0
  try {
    say('bare mosquitto QoS1 → one subscriber …')
    ceiling = await ceilingRound(
      { readings: 300_000, devices: 1_000, connections: opts.connections, rounds: 1 },
      broker.url,
      broker.port,
      1,
    )
    say(`  ${fmt(ceiling)} msgs/s`)
    say('bare JetStream async publish …')
    jetstreamPerSec = await jetstreamCeiling(nc, 100_000)
    say(`  ${fmt(jetstreamPerSec)} msgs/s`)
    // The ceiling's messages are not readings: the pipeline starts on an empty stream.
    await (await jetstreamManager(nc)).streams.purge(BUS.streams.telemetry)

    const quiet = { VIGIL_NATS_URL: nats.url, VIGIL_LOG_LEVEL: 'warn' }
    // BENCH_INFERENCE_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the inference service.
    const inference = await startService(
      'inference',
      { ...quiet, VIGIL_BOOTSTRAP_DEVICE_ROWS: '0' },
      { nodeArgs: (process.env.BENCH_INFERENCE_NODE_ARGS ?? '').split(' ').filter(Boolean) },
    )
    const query = await startService(
      'query',
      { ...quiet, VIGIL_DATA_DIR: dataDir.path, VIGIL_INFERENCE_ADDR: inference.url },
      // BENCH_QUERY_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the store side.
      { timeoutMs: 60_000, nodeArgs: (process.env.BENCH_QUERY_NODE_ARGS ?? '').split(' ').filter(Boolean) },
    )
    const bridge = await startService('bridge', {
      ...quiet,
      VIGIL_MQTT_URL: broker.url,
      VIGIL_DEVICE_RATE: '0',
    })
    services.push(bridge, inference, query)
    const pids: Record<string, number | undefined> = {
      mosquitto: broker.pid,
      'nats-server': nats.pid(),
      bridge: bridge.proc.pid,
      inference: inference.proc.pid,
      query: query.proc.pid,
    }
    const counters = async () => ({
      stored: await counter(query.url, 'vigil_store_rows_inserted_total', 'table="telemetry"'),
      scored: await counter(inference.url, 'vigil_inference_readings_total', 'path="async"'),
    })

    say('warm-up: 1,000 devices for 5 s (the bootstrap fleet model is trained from them) …')
    const warm = {
      readings: 5_000,
      devices: 1_000,
      connections: opts.connections,
      rounds: 1,
      port: broker.port,
    }
    await loadInWorker({ ...warm, prefix: 'warm', topicPrefix: 'devices', ratePerSec: 1_000 })
    await eventually(
      async () => {
        const c = await counters()
        return c.stored >= 5_000 && c.scored >= 5_000
      },
      120_000,
      'the warm-up readings stored and scored',
    )

    const query$ = createClient(
      QueryService,
      createConnectTransport({ baseUrl: query.url, httpVersion: '2' }),
    )
    for (const [n, devices] of DEVICE_STEPS.filter((d) => d <= opts.maxDevices).entries()) {
      const prefix = `s${n}`
      const total = devices * opts.seconds
      const watch = followOnWatch(query$, prefix)
      await sleep(300) // the Watch subscriptions in place
      const before = await counters()
      const usageBefore = usageOf(pids)
      const started = Date.now()
      // Counters sampled while the load runs: the sustained rate is the one of the steady part.
      const samples: { at: number; stored: number; scored: number }[] = []
      let sampling = true
      const sampler = (async () => {
        while (sampling) {
          samples.push({ at: Date.now(), ...(await counters()) })
          await sleep(250)
        }
      })()
      const generated = await loadInWorker({
        readings: total,
        devices,
        connections: opts.connections,
        rounds: 1,
        port: broker.port,
        prefix,
        topicPrefix: 'devices',
        ratePerSec: devices,
      })
      const generatedAt = Date.now()
      sampling = false
      await sampler
      // Drained: every reading of the step stored and scored, or 30 s without getting there.
      let now = await counters()
      while (
        (now.stored - before.stored < total || now.scored - before.scored < total) &&
        Date.now() - generatedAt < 30_000
      ) {
        await sleep(100)
        now = await counters()
      }
      const doneAt = Date.now()
      const elapsed = (doneAt - started) / 1000
      const usageAfter = usageOf(pids)
      watch.stop()
      const stored = Math.min(now.stored - before.stored, now.scored - before.scored)
      const steady = samples.filter((x) => x.at >= started + 1_000)
      const first = steady[0]
      const last = steady.at(-1)
      const sustainedPerSec =
        first && last && last.at > first.at
          ? Math.min(last.stored - first.stored, last.scored - first.scored) / ((last.at - first.at) / 1000)
          : stored / elapsed
      // Kept up: everything stored and scored within 3 s of the last send, at ≥ 90% of the offered
      // rate while the load ran, and the generator on schedule (the broker took every message).
      const keptUp =
        stored >= total &&
        doneAt - generatedAt < 3_000 &&
        sustainedPerSec >= 0.9 * devices &&
        generated.behindMs < 1_000
      const step: StepResult = {
        devices,
        offeredPerSec: devices,
        sustainedPerSec,
        keptUp,
        storeP50: Number.NaN,
        storeP99: Number.NaN,
        watchReadingP99: percentile(
          watch.readings.sort((a, b) => a - b),
          99,
        ),
        watchInferenceP50: percentile(
          watch.inferences.sort((a, b) => a - b),
          50,
        ),
        watchInferenceP99: percentile(
          watch.inferences.sort((a, b) => a - b),
          99,
        ),
        cpu: Object.fromEntries(
          Object.keys(pids).map((k) => [
            k,
            ((usageAfter[k]?.cpuSeconds ?? 0) - (usageBefore[k]?.cpuSeconds ?? 0)) / elapsed,
          ]),
        ),
        rssMb: Object.fromEntries(Object.keys(pids).map((k) => [k, usageAfter[k]?.peakRssMb ?? 0])),
      }
      steps.push(step)
      say(
        `${fmt(devices)} devices: offered ${fmt(devices)}/s, sustained ${fmt(step.sustainedPerSec)} readings/s` +
          ` (${keptUp ? 'kept up' : `fell behind: ${fmt(stored)} of ${fmt(total)} after ${elapsed.toFixed(1)} s, generator ${fmt(generated.behindMs)} ms late`}),` +
          ` Watch p99 ${fmt(step.watchReadingP99)} ms, CPU ${Object.entries(step.cpu)
            .map(([k, v]) => `${k} ${v.toFixed(2)}`)
            .join(', ')}`,
      )
      if (!keptUp) break
      await sleep(2_000) // let merges and GC settle between steps
    }
  } finally {
    for (const s of services) await s.stop(30_000)
    await nc.drain()
    await Promise.all([nats.stop(), broker.stop()])
  }

  // Publish → row latencies, read from the store once the query process (its only user) stopped.
  const ch = await openClickHouse(
    { clickhouseUser: 'default', clickhousePassword: '', clickhouseDatabase: 'vigil', dataDir: dataDir.path },
    log,
  )
  const rs = await ch.client.query({
    query: `SELECT splitByChar('-', device_id)[1] AS step,
                   quantiles(0.5, 0.99)(toUnixTimestamp64Milli(stored_at) - toUnixTimestamp64Milli(ts)) AS q
            FROM ${ch.table('telemetry')} GROUP BY step`,
    format: 'JSONEachRow',
  })
  for (const row of (await rs.json()) as { step: string; q: number[] }[]) {
    const step = steps[Number(row.step.slice(1))]
    if (!step || !row.step.startsWith('s')) continue
    step.storeP50 = row.q[0] as number
    step.storeP99 = row.q[1] as number
  }
  await ch.close()
  dataDir.remove()
  report(steps, { ceiling, jetstreamPerSec, machine, seconds: opts.seconds })
}

/** The sum of a metric's series matching a label, from a service's /metrics. */
async function counter(baseUrl: string, name: string, label: string): Promise<number> {
  return metricSum(await (await fetch(`${baseUrl}/metrics`)).text(), name, label)
}

function usageOf(pids: Record<string, number | undefined>) {
  return Object.fromEntries(
    Object.entries(pids).map(([k, pid]) => [k, pid ? processUsage(pid) : undefined]),
  ) as Record<string, ReturnType<typeof processUsage> | undefined>
}

/** Latencies (ms since the reading's ts, its send time) of a step's first devices on Watch. */
function followOnWatch(query: ReturnType<typeof createClient<typeof QueryService>>, prefix: string) {
  const stop = new AbortController()
  const readings: number[] = []
  const inferences: number[] = []
  const deviceIds = Array.from({ length: WATCHED }, (_, k) => `${prefix}-${k}`)
  void (async () => {
    try {
      for await (const res of query.watch(
        { deviceIds, readings: true, inferences: true },
        { signal: stop.signal },
      )) {
        const now = Date.now()
        if (res.event.case === 'reading' && res.event.value.ts)
          readings.push(now - timestampMs(res.event.value.ts))
        if (res.event.case === 'inference' && res.event.value.ts)
          inferences.push(now - timestampMs(res.event.value.ts))
      }
    } catch {
      // aborted at the end of the step
    }
  })()
  return { readings, inferences, stop: () => stop.abort() }
}

function report(
  steps: StepResult[],
  run: { ceiling: number; jetstreamPerSec: number; machine: string; seconds: number },
): void {
  const best = steps.filter((s) => s.keptUp).at(-1)
  const peak = Math.max(...steps.map((s) => s.sustainedPerSec))
  const lines = [
    `# End-to-end benchmark (${new Date().toISOString().slice(0, 10)})`,
    '',
    `Machine: ${run.machine}. Command: \`npm run bench -- e2e\`. Steps of ${run.seconds} s; each device`,
    `sends one reading with ${SENSORS_PER_READING} sensors per second over MQTT QoS1 (lean generator, one process).`,
    '',
    '| bare ceiling | msgs/s |',
    '|---|---|',
    `| mosquitto QoS1 → one subscriber | ${fmt(run.ceiling)} |`,
    `| JetStream async publish (200 B) | ${fmt(run.jetstreamPerSec)} |`,
    '',
    '| devices | offered readings/s | sustained readings/s | data points/s | / mosquitto ceiling | kept up | publish → ClickHouse p50 / p99 ms | publish → Watch reading p99 ms | publish → Watch inference p50 / p99 ms | CPU cores (bridge, inference, query, nats, mosquitto) | peak RSS MB (bridge, inference, query, nats, mosquitto = total) |',
    '|---|---|---|---|---|---|---|---|---|---|---|',
    ...steps
      .map((s) =>
        [
          fmt(s.devices),
          fmt(s.offeredPerSec),
          fmt(s.sustainedPerSec),
          fmt(s.sustainedPerSec * SENSORS_PER_READING),
          (s.sustainedPerSec / run.ceiling).toFixed(2),
          s.keptUp ? 'yes' : 'no',
          `${fmt(s.storeP50)} / ${fmt(s.storeP99)}`,
          fmt(s.watchReadingP99),
          `${fmt(s.watchInferenceP50)} / ${fmt(s.watchInferenceP99)}`,
          ['bridge', 'inference', 'query', 'nats-server', 'mosquitto']
            .map((k) => (s.cpu[k] ?? 0).toFixed(2))
            .join(', '),
          `${['bridge', 'inference', 'query', 'nats-server', 'mosquitto'].map((k) => fmt(s.rssMb[k] ?? 0)).join(', ')} = ${fmt(Object.values(s.rssMb).reduce((a, b) => a + b, 0))}`,
        ].join(' | '),
      )
      .map((row) => `| ${row} |`),
    '',
    best
      ? `Highest load kept up with: ${fmt(best.sustainedPerSec)} readings/s (${fmt(best.sustainedPerSec * SENSORS_PER_READING)} data points/s), ${(best.sustainedPerSec / run.ceiling).toFixed(2)} × the mosquitto ceiling; peak sustained ${fmt(peak)} readings/s.`
      : 'The pipeline kept up with no step.',
  ]
  const dir = fileURLToPath(new URL('./results/', import.meta.url))
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'e2e.md'), `${lines.join('\n')}\n`)
  writeFileSync(join(dir, 'e2e.svg'), plot(steps, run.ceiling))
  say('')
  for (const line of lines.slice(5)) say(line)
  say('')
  say(`written: bench/results/e2e.md, bench/results/e2e.svg`)
}

/** Throughput (left) and latency (right) against offered load, both on log-scaled load axes. */
export function plot(steps: StepResult[], ceiling: number): string {
  const W = 960
  const H = 380
  const pad = { l: 70, r: 20, t: 40, b: 50 }
  const half = W / 2
  const xs = steps.map((s) => s.offeredPerSec)
  const xMin = Math.log10(Math.min(...xs) / 1.3)
  const xMax = Math.log10(Math.max(...xs) * 1.3)
  const x = (v: number, left: number) =>
    left + pad.l + ((Math.log10(v) - xMin) / (xMax - xMin)) * (half - pad.l - pad.r)
  const yTop = Math.max(ceiling, ...xs) * 1.05
  const yT = (v: number) => H - pad.b - (v / yTop) * (H - pad.t - pad.b)
  const lat = steps
    .flatMap((s) => [s.storeP99, s.watchReadingP99, s.watchInferenceP99, s.storeP50])
    .filter((v) => v > 0)
  const lMin = Math.log10(Math.max(1, Math.min(...lat) / 1.5))
  const lMax = Math.log10(Math.max(...lat, 250) * 1.5)
  const yL = (v: number) =>
    H - pad.b - ((Math.log10(Math.max(v, 1)) - lMin) / (lMax - lMin)) * (H - pad.t - pad.b)
  const line = (pts: [number, number][], color: string, dash = '') =>
    `<polyline fill="none" stroke="${color}" stroke-width="2" ${dash ? `stroke-dasharray="${dash}"` : ''} points="${pts
      .filter(([, y]) => Number.isFinite(y))
      .map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`)
      .join(' ')}"/>`
  const text = (tx: number, ty: number, s: string, anchor = 'middle', size = 12) =>
    `<text x="${tx.toFixed(1)}" y="${ty.toFixed(1)}" font-size="${size}" text-anchor="${anchor}" font-family="sans-serif">${s}</text>`
  const xTicks = (left: number) =>
    xs
      .map((v) => `${text(x(v, left), H - pad.b + 16, v >= 1000 ? `${v / 1000}k` : String(v), 'middle', 10)}`)
      .join('')
  const axes = (left: number) =>
    `<line x1="${left + pad.l}" y1="${H - pad.b}" x2="${left + half - pad.r}" y2="${H - pad.b}" stroke="#444"/>` +
    `<line x1="${left + pad.l}" y1="${pad.t}" x2="${left + pad.l}" y2="${H - pad.b}" stroke="#444"/>` +
    xTicks(left) +
    text(left + half / 2 + pad.l / 2, H - 12, 'offered load (readings/s, log scale)')
  const tTicks = [0, 0.25, 0.5, 0.75, 1]
    .map((f) => f * yTop)
    .map((v) => text(pad.l - 6, yT(v) + 4, fmt(v), 'end', 10))
    .join('')
  const lTicks = [1, 10, 100, 1000, 10000]
    .filter((v) => Math.log10(v) >= lMin && Math.log10(v) <= lMax)
    .map((v) => text(half + pad.l - 6, yL(v) + 4, fmt(v), 'end', 10))
    .join('')
  const legend = (left: number, items: [string, string, string][]) =>
    items
      .map(
        ([label, color, dash], i) =>
          `<line x1="${left + pad.l + 10}" y1="${pad.t + 10 + i * 16}" x2="${left + pad.l + 34}" y2="${pad.t + 10 + i * 16}" stroke="${color}" stroke-width="2" ${dash ? `stroke-dasharray="${dash}"` : ''}/>` +
          text(left + pad.l + 40, pad.t + 14 + i * 16, label, 'start', 11),
      )
      .join('')
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-labelledby="title">`,
    '<title id="title">Vigil end to end: sustained readings/s and latency against offered load</title>',
    `<rect width="${W}" height="${H}" fill="white"/>`,
    text(half / 2, 20, 'Throughput', 'middle', 14),
    text(half + half / 2, 20, 'Latency from device publish (ms, log scale)', 'middle', 14),
    axes(0),
    axes(half),
    tTicks,
    lTicks,
    line(
      [
        [x(xs[0] as number, 0), yT(ceiling)],
        [x(xs.at(-1) as number, 0), yT(ceiling)],
      ],
      '#999',
      '2 4',
    ),
    line(
      [
        [x(xs[0] as number, 0), yT(0.6 * ceiling)],
        [x(xs.at(-1) as number, 0), yT(0.6 * ceiling)],
      ],
      '#d62728',
      '2 4',
    ),
    line(
      steps.map((s) => [x(s.offeredPerSec, 0), yT(s.offeredPerSec)]),
      '#7f7f7f',
      '6 4',
    ),
    line(
      steps.map((s) => [x(s.offeredPerSec, 0), yT(s.sustainedPerSec)]),
      '#1f77b4',
    ),
    legend(0, [
      ['sustained readings/s', '#1f77b4', ''],
      ['offered', '#7f7f7f', '6 4'],
      ['bare mosquitto ceiling', '#999', '2 4'],
      ['0.6 × ceiling (target)', '#d62728', '2 4'],
    ]),
    line(
      steps.map((s) => [x(s.offeredPerSec, half), yL(s.storeP50)]),
      '#2ca02c',
      '6 4',
    ),
    line(
      steps.map((s) => [x(s.offeredPerSec, half), yL(s.storeP99)]),
      '#2ca02c',
    ),
    line(
      steps.map((s) => [x(s.offeredPerSec, half), yL(s.watchReadingP99)]),
      '#9467bd',
    ),
    line(
      steps.map((s) => [x(s.offeredPerSec, half), yL(s.watchInferenceP99)]),
      '#ff7f0e',
    ),
    line(
      [
        [x(xs[0] as number, half), yL(250)],
        [x(xs.at(-1) as number, half), yL(250)],
      ],
      '#d62728',
      '2 4',
    ),
    legend(half, [
      ['→ ClickHouse p50', '#2ca02c', '6 4'],
      ['→ ClickHouse p99', '#2ca02c', ''],
      ['→ Watch reading p99', '#9467bd', ''],
      ['→ Watch inference p99', '#ff7f0e', ''],
      ['250 ms (Watch p99 target)', '#d62728', '2 4'],
    ]),
    '</svg>',
    '',
  ].join('\n')
}
