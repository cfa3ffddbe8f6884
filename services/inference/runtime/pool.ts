// A pool of ONNX Runtime worker threads that scores rows for the RPC path and the async workers.
// Requests for the same model that arrive while the workers are busy are coalesced into one run
// (up to maxBatchRows), so a burst of single-row Infer calls costs a few runs, not one each.
// Every worker holds every loaded model; a run goes to the least busy worker.
import { Worker } from 'node:worker_threads'
import type { Logger } from '../../common/log.js'
import { InvalidModelError } from '../model/onnx.js'
import type { ScoreOutputs } from '../model/spec.js'
import { type BatchOutcome, UndecodableBatchError } from './batch.js'
import type { WorkerReply, WorkerRequest, WorkerSetup } from './protocol.js'

export interface PoolOptions {
  threads: number
  provider: 'cpu' | 'cuda'
  /** Share of devices (0..100) scored by a `canary` version where one exists (default 0). */
  canaryPercent?: number
  log: Logger
  /** Most rows in one coalesced run (default 4096). */
  maxBatchRows?: number
  /** Called after each run with its row count and duration (for metrics). */
  onRun?: (rows: number, seconds: number) => void
}

interface Part {
  values: Float64Array
  rows: number
  resolve: (out: ScoreOutputs) => void
  reject: (err: Error) => void
}

interface Slot {
  worker: Worker
  busy: number
  waiting: Map<number, { resolve: (reply: WorkerReply) => void }>
}

const here = import.meta.url
const WORKER_URL = here.endsWith('.ts')
  ? new URL('./ort-worker-dev.mjs', here)
  : new URL('./ort-worker.js', here)

export class ScoringPool {
  private readonly slots: Slot[] = []
  private readonly queues = new Map<string, { parts: Part[]; features: number }>()
  /** Bytes of every loaded model, to reload into a worker that had to be restarted. */
  private readonly models = new Map<string, { bytes: Uint8Array; features: number }>()
  private readonly retiring = new Set<string>()
  /** The routes every thread holds, to give a restarted thread. */
  private readonly routes: Extract<WorkerRequest, { type: 'route' }>[] = []
  private nextId = 1
  private scheduled = false
  private closed = false
  private inFlight = 0
  provider: 'cpu' | 'cuda'

  constructor(private readonly opts: PoolOptions) {
    this.provider = opts.provider
    for (let i = 0; i < Math.max(1, opts.threads); i++) this.slots.push(this.spawn())
  }

  private spawn(): Slot {
    const setup: WorkerSetup = { provider: this.opts.provider, canaryPercent: this.opts.canaryPercent ?? 0 }
    const worker = new Worker(WORKER_URL, { workerData: setup })
    const slot: Slot = { worker, busy: 0, waiting: new Map() }
    worker.on('message', (reply: WorkerReply) => {
      if (reply.type === 'notice') {
        this.opts.log.warn(reply.message)
        return
      }
      if (reply.type === 'provider') {
        if (this.provider !== reply.provider)
          this.opts.log.warn({ reason: reply.reason }, 'CUDA is not available here: scoring on the CPU')
        this.provider = reply.provider
        return
      }
      const waiter = slot.waiting.get(reply.id)
      slot.waiting.delete(reply.id)
      if (slot.waiting.size === 0) worker.unref()
      waiter?.resolve(reply)
    })
    worker.on('error', (err) => this.opts.log.error({ err: err.message }, 'scoring thread failed'))
    worker.on('exit', (code) => {
      const lost = [...slot.waiting.values()]
      slot.waiting.clear()
      for (const w of lost) w.resolve({ type: 'error', id: 0, message: `scoring thread exited (${code})` })
      if (this.closed) return
      // Replace the thread and give it every model the others have.
      this.opts.log.error({ code }, 'scoring thread exited: restarting it')
      const index = this.slots.indexOf(slot)
      const fresh = this.spawn()
      if (index >= 0) this.slots[index] = fresh
      for (const [key, m] of this.models)
        void this.request(fresh, { type: 'load', id: 0, key, bytes: m.bytes, features: m.features })
    })
    // Idle threads do not keep the process alive; a thread with work pending does.
    worker.unref()
    return slot
  }

  private request(slot: Slot, msg: WorkerRequest, transfer: ArrayBuffer[] = []): Promise<WorkerReply> {
    return new Promise((resolve) => {
      const id = this.nextId++
      if (slot.waiting.size === 0) slot.worker.ref()
      slot.waiting.set(id, { resolve })
      slot.worker.postMessage({ ...msg, id }, transfer)
    })
  }

  /**
   * Loads a model into every thread under `key` (replacing what was there). Resolves once every
   * thread created the session and ran it on a trial row; throws InvalidModelError otherwise, and
   * then no thread keeps it.
   */
  async load(key: string, bytes: Uint8Array, features: number): Promise<void> {
    const replies = await Promise.all(
      this.slots.map((slot) => this.request(slot, { type: 'load', id: 0, key, bytes, features })),
    )
    const failed = replies.find((r) => r.type === 'error')
    if (failed && failed.type === 'error') {
      for (const slot of this.slots) slot.worker.postMessage({ type: 'release', key } satisfies WorkerRequest)
      throw new InvalidModelError(`ONNX Runtime cannot use this model: ${failed.message}`)
    }
    this.retiring.delete(key)
    this.models.set(key, { bytes, features })
  }

  /** Tells every thread which loaded model serves an alias now (for batches routed in the threads). */
  route(name: string, alias: 'production' | 'canary', key: string | undefined): void {
    const msg: Extract<WorkerRequest, { type: 'route' }> = { type: 'route', name, alias, key }
    const i = this.routes.findIndex((r) => r.name === name && r.alias === alias)
    if (i >= 0) this.routes.splice(i, 1)
    if (key !== undefined) this.routes.push(msg)
    for (const slot of this.slots) slot.worker.postMessage(msg)
  }

  /**
   * Scores a whole ReadingBatch in a thread (decode, route, run, interpret, encode). Rejects with
   * UndecodableBatchError for bytes that are not a ReadingBatch.
   */
  async scoreBatch(data: Uint8Array, fallbackId: string, inferredAtMs: number): Promise<BatchOutcome> {
    if (this.closed) throw new Error('the scoring pool is closed')
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a))
    slot.busy++
    const started = process.hrtime.bigint()
    try {
      // A copy of just these bytes, handed over: a message's bytes are often a view into a larger
      // buffer of the NATS client, and postMessage would copy all of that buffer. (Not `slice()`:
      // on a Node Buffer it makes a view, and handing that over would detach the client's buffer.)
      const own = new Uint8Array(data.byteLength)
      own.set(data)
      const reply = await this.request(slot, { type: 'batch', id: 0, data: own, fallbackId, inferredAtMs }, [
        own.buffer as ArrayBuffer,
      ])
      if (reply.type === 'error')
        throw reply.poison ? new UndecodableBatchError(reply.message) : new Error(reply.message)
      if (reply.type !== 'batched') throw new Error('unexpected reply')
      this.opts.onRun?.(reply.outcome.scores.length, Number(process.hrtime.bigint() - started) / 1e9)
      return reply.outcome
    } finally {
      slot.busy--
    }
  }

  /** Frees a model once every request already queued for it has run. */
  release(key: string): void {
    this.retiring.add(key)
    this.releaseIfIdle(key)
  }

  private releaseIfIdle(key: string): void {
    if (!this.retiring.has(key) || this.queues.has(key)) return
    this.retiring.delete(key)
    this.models.delete(key)
    // Threads handle messages in order: runs already posted for this key finish first.
    for (const slot of this.slots) slot.worker.postMessage({ type: 'release', key } satisfies WorkerRequest)
  }

  /** Scores `rows` rows (row-major, `features` wide) with the model loaded under `key`. */
  score(key: string, values: Float64Array, rows: number, features: number): Promise<ScoreOutputs> {
    if (this.closed) return Promise.reject(new Error('the scoring pool is closed'))
    return new Promise((resolve, reject) => {
      let queue = this.queues.get(key)
      if (!queue) {
        queue = { parts: [], features }
        this.queues.set(key, queue)
      }
      queue.parts.push({ values, rows, resolve, reject })
      if (!this.scheduled) {
        this.scheduled = true
        setImmediate(() => {
          this.scheduled = false
          this.flush()
        })
      }
    })
  }

  private capacity(): boolean {
    return this.inFlight < this.slots.length * 2
  }

  private flush(): void {
    const max = this.opts.maxBatchRows ?? 4096
    for (const [key, queue] of this.queues) {
      while (queue.parts.length > 0 && this.capacity()) {
        const batch: Part[] = []
        let rows = 0
        while (
          queue.parts.length > 0 &&
          (batch.length === 0 || rows + (queue.parts[0] as Part).rows <= max)
        ) {
          const part = queue.parts.shift() as Part
          batch.push(part)
          rows += part.rows
        }
        void this.runBatch(key, queue.features, batch, rows)
      }
      if (queue.parts.length === 0) {
        this.queues.delete(key)
        this.releaseIfIdle(key)
      }
    }
  }

  private async runBatch(key: string, features: number, batch: Part[], rows: number): Promise<void> {
    let values: Float64Array
    if (batch.length === 1) values = (batch[0] as Part).values.slice(0, rows * features)
    else {
      values = new Float64Array(rows * features)
      let offset = 0
      for (const part of batch) {
        values.set(part.values.subarray(0, part.rows * features), offset)
        offset += part.rows * features
      }
    }
    const slot = this.slots.reduce((a, b) => (b.busy < a.busy ? b : a))
    slot.busy++
    this.inFlight++
    const started = process.hrtime.bigint()
    try {
      const reply = await this.request(slot, { type: 'run', id: 0, key, values, rows, features }, [
        values.buffer as ArrayBuffer,
      ])
      if (reply.type !== 'ran') throw new Error(reply.type === 'error' ? reply.message : 'unexpected reply')
      this.opts.onRun?.(rows, Number(process.hrtime.bigint() - started) / 1e9)
      const [score, spe, t2, speParts, t2Parts, contributions] = reply.outputs as Float64Array[]
      let row = 0
      for (const part of batch) {
        const a = row
        const b = row + part.rows
        part.resolve({
          score: (score as Float64Array).subarray(a, b),
          spe: (spe as Float64Array).subarray(a, b),
          t2: (t2 as Float64Array).subarray(a, b),
          speParts: (speParts as Float64Array).subarray(a * features, b * features),
          t2Parts: (t2Parts as Float64Array).subarray(a * features, b * features),
          contributions: (contributions as Float64Array).subarray(a * features, b * features),
        })
        row = b
      }
    } catch (err) {
      for (const part of batch) part.reject(err as Error)
    } finally {
      slot.busy--
      this.inFlight--
      if (this.queues.size > 0) this.flush()
    }
  }

  get threads(): number {
    return this.slots.length
  }

  async close(): Promise<void> {
    this.closed = true
    for (const [, queue] of this.queues)
      for (const p of queue.parts) p.reject(new Error('the scoring pool is closed'))
    this.queues.clear()
    await Promise.all(this.slots.map((s) => s.worker.terminate()))
  }
}
