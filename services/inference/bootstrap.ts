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
import { buildOnnx } from './model/onnx.js'
import { TrainingError, trainingSet, trainModel } from './model/train.js'
import type { ActiveModels } from './models.js'
import type { ModelRegistry } from './registry.js'

const LOCK_KEY = 'fleet.bootstrap'
const LOCK_STALE_MS = 120_000

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
        if (!(await this.lock())) {
          // Another process trains; wait for its model, take over if it died.
          await sleep(5_000, stop.signal).catch(() => undefined)
          continue
        }
        this.state = 'training'
        try {
          const set = trainingSet(readings, 'bootstrap')
          const spec = trainModel(set, { scope: 'fleet' })
          const stored = await this.opts.registry.store(buildOnnx(spec))
          await models.check(buildOnnx(stored.spec))
          const { change } = await this.opts.registry.setAlias('fleet', 'production', stored.spec.version)
          log.info(
            { model: 'fleet', version: stored.spec.version, rows: set.rows, features: set.features },
            'bootstrap model trained and promoted to production',
          )
          await models.apply(change)
          break
        } catch (err) {
          const why = (err as Error).message
          log.error(
            { err: why },
            err instanceof TrainingError ? 'bootstrap data cannot make a model' : 'bootstrap failed',
          )
          this.state = 'waiting'
          this.opts.rows *= 2 // more data next time (for example when many readings lacked a feature)
          await this.unlock()
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

  private async lock(): Promise<boolean> {
    const kv = this.opts.registry.aliases
    const value = JSON.stringify({ owner: this.opts.owner, at: Date.now() })
    try {
      await kv.create(LOCK_KEY, value)
      return true
    } catch {
      const entry = await kv.get(LOCK_KEY)
      if (!entry) return false
      const held = entry.operation === 'PUT' ? (entry.json() as { at: number }) : { at: 0 }
      if (entry.operation === 'PUT' && Date.now() - held.at < LOCK_STALE_MS) return false
      try {
        await kv.update(LOCK_KEY, value, entry.revision)
        return true
      } catch {
        return false
      }
    }
  }

  private async unlock(): Promise<void> {
    await this.opts.registry.aliases.delete(LOCK_KEY).catch(() => undefined)
  }
}
