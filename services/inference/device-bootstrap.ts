// Device bootstrap models: a device's own model finds what a fleet model cannot (its baseline is
// its own, so the fleet's spread does not widen its limits). Once a device without one has sent
// `rows` readings, a model is trained from them and promoted. One inference process does it (a
// lease in the aliases bucket), reading the TELEMETRY stream through its own durable consumer, so
// a successor continues where it stopped; windows being collected are lost with their process.
import { timestampMs } from '@bufbuild/protobuf/wkt'
import type { JetStreamManager } from '@nats-io/jetstream'
import { decodeReadingBatch } from '../common/codec.js'
import { sleep } from '../common/health.js'
import type { Logger } from '../common/log.js'
import { BUS, ensureConsumer, type JetStreamClient, PoisonMessageError, runConsumer } from '../common/nats.js'
import { trainAndPromote } from './bootstrap.js'
import { Lease } from './lease.js'
import type { InferenceMetrics } from './metrics.js'
import { modelName } from './model/spec.js'
import { TrainingError } from './model/train.js'
import type { ActiveModels } from './models.js'
import type { ModelRegistry } from './registry.js'

export const DEVICE_BOOTSTRAP_DURABLE = 'inference-device-bootstrap'
const LEASE_KEY = 'device.bootstrap'

type Row = { sensors: Record<string, number>; tsMs: number }

export interface DeviceBootstrapOptions {
  js: JetStreamClient
  jsm: JetStreamManager
  registry: ModelRegistry
  models: ActiveModels
  metrics: InferenceMetrics
  log: Logger
  /** Readings a device model is trained from; 0 turns device bootstrap off. */
  rows: number
  /** No more device models are bootstrapped once this many serve. */
  maxModels: number
  /** Devices whose windows are collected at once (bounds memory: maxPending × rows readings). */
  maxPending: number
  owner: string
}

export class DeviceBootstrap {
  private readonly windows = new Map<string, Row[]>()

  constructor(private readonly opts: DeviceBootstrapOptions) {}

  /** Runs until `signal` aborts: waits for the lease, then trains device models as windows fill. */
  async run(signal: AbortSignal): Promise<void> {
    const { opts } = this
    if (opts.rows === 0) return
    while (!signal.aborted) {
      if (this.full) {
        await sleep(30_000, signal).catch(() => undefined)
        continue
      }
      const lease = new Lease(opts.registry.aliases, LEASE_KEY, opts.owner)
      if (!(await lease.acquire())) {
        await sleep(5_000, signal).catch(() => undefined)
        continue
      }
      opts.log.info(
        { rows: opts.rows, maxModels: opts.maxModels },
        'device bootstrap: training a model for each device without one from its first readings',
      )
      const stop = new AbortController()
      const abort = () => stop.abort()
      signal.addEventListener('abort', abort, { once: true })
      try {
        await ensureConsumer(opts.jsm, BUS.streams.telemetry, DEVICE_BOOTSTRAP_DURABLE, { maxDeliver: 5 })
        await runConsumer({
          js: opts.js,
          stream: BUS.streams.telemetry,
          durable: DEVICE_BOOTSTRAP_DURABLE,
          log: opts.log,
          signal: stop.signal,
          // Poison is the workers' and the store's to dead-letter; this consumer only skips it.
          deadLetterPoison: false,
          handle: async (msg) => {
            await this.take(msg.data)
            if (this.full) stop.abort()
          },
        })
      } finally {
        signal.removeEventListener('abort', abort)
        await lease.release()
        this.windows.clear()
      }
    }
  }

  /** Whether as many device models serve as may be bootstrapped. */
  private get full(): boolean {
    return this.opts.models.countNamed('device-') >= this.opts.maxModels
  }

  private async take(data: Uint8Array): Promise<void> {
    const { opts } = this
    let readings: ReturnType<typeof decodeReadingBatch>['readings']
    try {
      readings = decodeReadingBatch(data).readings
    } catch (err) {
      throw new PoisonMessageError((err as Error).message)
    }
    for (const r of readings) {
      const name = modelName('device', r.deviceId)
      if (opts.models.serving(name, 'production')) continue
      let window = this.windows.get(r.deviceId)
      if (!window) {
        if (this.windows.size >= opts.maxPending) continue
        window = []
        this.windows.set(r.deviceId, window)
      }
      window.push({ sensors: r.sensors, tsMs: r.ts ? timestampMs(r.ts) : Date.now() })
      if (window.length < opts.rows) continue
      this.windows.delete(r.deviceId)
      try {
        await trainAndPromote(window, { scope: 'device', scopeKey: r.deviceId }, opts)
        opts.metrics.bootstrapped.inc({ scope: 'device', outcome: 'promoted' })
      } catch (err) {
        // Its next readings make a new window (for example once they carry every feature).
        opts.metrics.bootstrapped.inc({ scope: 'device', outcome: 'failed' })
        if (!(err instanceof TrainingError)) throw err
        opts.log.warn({ device: r.deviceId, err: err.message }, 'device bootstrap: no model from this window')
      }
      if (this.full) return
    }
  }
}
