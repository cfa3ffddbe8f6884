// The bootstrap model: while no fleet model exists, read the first readings on the bus (the
// TELEMETRY stream from its start, without consuming anything) and, once there are enough, train
// a fleet model from them, store it and make it `production`. With several inference processes,
// one trains (a lock in the aliases bucket) and the others pick the model up through the alias.
import { timestampMs } from '@bufbuild/protobuf/wkt'
import { DeliverPolicy } from '@nats-io/jetstream'
import { decodeReadingBatch } from '../common/codec.js'
import { sleep } from '../common/health.js'
import type { Logger } from '../common/log.js'
import { BUS, type JetStreamClient } from '../common/nats.js'
import { Lease } from './lease.js'
import type { InferenceMetrics } from './metrics.js'
import { buildOnnx } from './model/onnx.js'
import { TrainingError, type TrainOptions, trainingSet, trainModel } from './model/train.js'
import type { ActiveModels } from './models.js'
import type { ModelRegistry } from './registry.js'

const LEASE_KEY = 'fleet.bootstrap'

export type BootstrapState = 'off' | 'waiting' | 'training' | 'done'

export class Bootstrap {
  state: BootstrapState
  rowsSeen = 0

  constructor(
    private readonly opts: {
      js: JetStreamClient
      registry: ModelRegistry
      models: ActiveModels
      log: Logger
      metrics: InferenceMetrics
      /** Readings to train from; 0 turns the bootstrap off. */
      rows: number
      owner: string
    },
  ) {
    this.state = opts.rows > 0 ? 'waiting' : 'off'
  }

  get rowsNeeded(): number {
    return this.opts.rows
  }

  /** A sentence for operators and for the FailedPrecondition answer before any model exists. */
  get message(): string {
    if (this.state === 'off')
      return 'no model is trained yet and the bootstrap model is off (VIGIL_BOOTSTRAP_ROWS=0): train one with "vigil train"'
    if (this.state === 'done') return 'a fleet model serves'
    if (this.state === 'training') return `training the bootstrap model from ${this.opts.rows} readings`
    return (
      `no model is trained yet: a bootstrap fleet model is trained from the first ${this.opts.rows} readings ` +
      `on the bus (${Math.min(this.rowsSeen, this.opts.rows)} so far), or train one with "vigil train"`
    )
  }

  /** Runs until a fleet model exists (or `signal` aborts). */
  async run(signal: AbortSignal): Promise<void> {
    const { log, models } = this.opts
    if (this.state === 'off') return
    if (models.hasFleetModel) {
      this.state = 'done'
      return
    }
    log.info({ rows: this.opts.rows }, 'no fleet model yet: collecting readings for a bootstrap model')
    const stop = new AbortController()
    const abort = () => stop.abort()
    signal.addEventListener('abort', abort, { once: true })
    models.onChange(() => {
      if (models.hasFleetModel) stop.abort()
    })
    try {
      while (!stop.signal.aborted) {
        const readings = await this.collect(stop.signal)
        if (stop.signal.aborted) break
        const lease = new Lease(this.opts.registry.aliases, LEASE_KEY, this.opts.owner)
        if (!(await lease.acquire())) {
          // Another process trains; wait for its model, take over if it died.
          await sleep(5_000, stop.signal).catch(() => undefined)
          continue
        }
        this.state = 'training'
        try {
          await trainAndPromote(readings, { scope: 'fleet' }, this.opts)
          this.opts.metrics.bootstrapped.inc({ scope: 'fleet', outcome: 'promoted' })
          break
        } catch (err) {
          this.opts.metrics.bootstrapped.inc({ scope: 'fleet', outcome: 'failed' })
          const why = (err as Error).message
          log.error(
            { err: why },
            err instanceof TrainingError ? 'bootstrap data cannot make a model' : 'bootstrap failed',
          )
          this.state = 'waiting'
          this.opts.rows *= 2 // more data next time (for example when many readings lacked a feature)
        } finally {
          await lease.release()
        }
      }
    } finally {
      signal.removeEventListener('abort', abort)
    }
    if (models.hasFleetModel) this.state = 'done'
  }

  private async collect(signal: AbortSignal): Promise<{ sensors: Record<string, number>; tsMs: number }[]> {
    const out: { sensors: Record<string, number>; tsMs: number }[] = []
    const seen = new Set<string>()
    const consumer = await this.opts.js.consumers.get(BUS.streams.telemetry, {
      deliver_policy: DeliverPolicy.All,
    })
    const messages = await consumer.consume({ max_messages: 64 })
    const stop = () => void messages.stop()
    signal.addEventListener('abort', stop, { once: true })
    try {
      for await (const msg of messages) {
        let readings: ReturnType<typeof decodeReadingBatch>['readings'] = []
        try {
          readings = decodeReadingBatch(msg.data).readings
        } catch {
          continue // poison is the store's and workers' business; the bootstrap skips it
        }
        for (const r of readings) {
          if (seen.has(r.eventId)) continue
          seen.add(r.eventId)
          out.push({ sensors: r.sensors, tsMs: r.ts ? timestampMs(r.ts) : Date.now() })
        }
        this.rowsSeen = out.length
        if (out.length >= this.opts.rows) break
      }
    } finally {
      signal.removeEventListener('abort', stop)
      await messages.close().catch(() => undefined)
    }
    return out
  }
}

/** Trains a model from readings, stores it, checks that it loads and makes it `production`. */
export async function trainAndPromote(
  readings: { sensors: Record<string, number>; tsMs: number }[],
  scope: TrainOptions,
  opts: { registry: ModelRegistry; models: ActiveModels; log: Logger },
): Promise<void> {
  const set = trainingSet(readings, 'bootstrap')
  const spec = trainModel(set, scope)
  const stored = await opts.registry.store(buildOnnx(spec))
  await opts.models.check(buildOnnx(stored.spec))
  const { change } = await opts.registry.setAlias(stored.spec.name, 'production', stored.spec.version)
  opts.log.info(
    { model: stored.spec.name, version: stored.spec.version, rows: set.rows, features: set.features },
    'bootstrap model trained and promoted to production',
  )
  await opts.models.apply(change)
}
