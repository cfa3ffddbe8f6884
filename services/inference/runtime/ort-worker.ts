// One worker thread holding ONNX Runtime sessions (its `run` blocks the thread it runs on, so it
// never runs on a service's event loop). Messages are handled one after another, in order: a
// `release` posted after some `run`s is handled after them.
import { parentPort, workerData } from 'node:worker_threads'
import * as ort from 'onnxruntime-node'
import { bankParameters, buildBankOnnx, GRAPH, readSpec, scoreOutputsOf } from '../model/onnx.js'
import type { ModelSpec, ScoreOutputs } from '../model/spec.js'
import { RouteCache, type Routes } from '../routing.js'
import { bankFeeds, ModelBank } from './bank.js'
import { type RunnableModel, scoreReadingBatch, UndecodableBatchError } from './batch.js'
import type { WorkerReply, WorkerRequest, WorkerSetup } from './protocol.js'

const setup = workerData as WorkerSetup
// ONNX Runtime's own logger writes plain text to stderr; its errors reach the service's JSON log
// through the replies instead.
ort.env.logLevel = 'fatal'
const sessions = new Map<string, ort.InferenceSession>()
/** Loaded models with their specs, for batches routed inside this thread. */
const models = new Map<string, RunnableModel>()
const routes: Routes<string> = new Map()
const routeCache = new RouteCache(routes, setup.canaryPercent)
/** Banks by feature list (names joined by a newline). */
const banks = new Map<string, ModelBank>()
/** The bank graph's session, made with the first model; undefined if it could not be (then no banks). */
let bankSession: Promise<ort.InferenceSession | undefined> | undefined
let provider: 'cpu' | 'cuda' = setup.provider
let queue: Promise<void> = Promise.resolve()

const port = parentPort
if (!port) throw new Error('ort-worker runs as a worker thread')

port.on('message', (msg: WorkerRequest) => {
  queue = queue.then(() => handle(msg)).catch(() => undefined)
})

function reply(msg: WorkerReply, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(msg, transfer)
}

async function createSession(bytes: Uint8Array): Promise<ort.InferenceSession> {
  const options: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: 1,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    logSeverityLevel: 3,
  }
  if (provider === 'cuda') {
    try {
      return await ort.InferenceSession.create(bytes, { ...options, executionProviders: ['cuda', 'cpu'] })
    } catch (err) {
      // No CUDA here (the provider libraries are not installed, or no GPU): say so once, use the CPU.
      provider = 'cpu'
      reply({ type: 'provider', provider, reason: (err as Error).message })
    }
  }
  return ort.InferenceSession.create(bytes, { ...options, executionProviders: ['cpu'] })
}

async function handle(msg: WorkerRequest): Promise<void> {
  switch (msg.type) {
    case 'load': {
      try {
        const session = await createSession(msg.bytes)
        const missing = GRAPH.outputs.filter((o) => !session.outputNames.includes(o))
        if (!session.inputNames.includes(GRAPH.input) || missing.length > 0) {
          await session.release()
          throw new Error(
            `the graph must take "${GRAPH.input}" and give ${GRAPH.outputs.join(', ')}; ` +
              `it takes ${session.inputNames.join(', ') || 'nothing'} and gives ${session.outputNames.join(', ')}`,
          )
        }
        // A trial run on one row: a graph whose shapes or operators do not fit fails here, not on traffic.
        await session.run({
          [GRAPH.input]: new ort.Tensor('float64', new Float64Array(msg.features), [1, msg.features]),
        })
        const old = sessions.get(msg.key)
        const spec = readSpec(msg.bytes)
        models.get(msg.key)?.bank?.remove(msg.key)
        sessions.set(msg.key, session)
        models.set(msg.key, runnable(spec, session, await bankFor(spec, msg.key, msg.bytes)))
        if (old) await old.release()
        reply({ type: 'loaded', id: msg.id, provider })
      } catch (err) {
        reply({ type: 'error', id: msg.id, message: (err as Error).message })
      }
      return
    }
    case 'run': {
      const session = sessions.get(msg.key)
      if (!session) {
        reply({ type: 'error', id: msg.id, message: `model ${msg.key} is not loaded` })
        return
      }
      try {
        const result = await session.run({
          [GRAPH.input]: new ort.Tensor('float64', msg.values, [msg.rows, msg.features]),
        })
        const outputs = GRAPH.outputs.map((name) => {
          const data = result[name]?.data as Float64Array
          // Hand over a buffer of our own (the tensor's may be shared with ONNX Runtime).
          return data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice()
        })
        reply(
          { type: 'ran', id: msg.id, outputs },
          outputs.map((o) => o.buffer as ArrayBuffer),
        )
      } catch (err) {
        reply({ type: 'error', id: msg.id, message: (err as Error).message })
      }
      return
    }
    case 'release': {
      const session = sessions.get(msg.key)
      sessions.delete(msg.key)
      models.get(msg.key)?.bank?.remove(msg.key)
      models.delete(msg.key)
      await session?.release()
      return
    }
    case 'route': {
      const slots = routes.get(msg.name) ?? {}
      if (msg.key === undefined) delete slots[msg.alias]
      else slots[msg.alias] = msg.key
      routes.set(msg.name, slots)
      routeCache.clear()
      return
    }
    case 'batch': {
      try {
        const outcome = await scoreReadingBatch(
          msg.data,
          msg.fallbackId,
          msg.inferredAtMs,
          routeCache,
          models,
        )
        const transfer = [outcome.scores.buffer as ArrayBuffer]
        if (outcome.bytes) transfer.push(outcome.bytes.buffer as ArrayBuffer)
        for (const alert of outcome.alerts) transfer.push(alert.bytes.buffer as ArrayBuffer)
        reply({ type: 'batched', id: msg.id, outcome }, transfer)
      } catch (err) {
        reply({
          type: 'error',
          id: msg.id,
          message: (err as Error).message,
          poison: err instanceof UndecodableBatchError,
        })
      }
      return
    }
  }
}

function runnable(
  spec: ModelSpec,
  session: ort.InferenceSession,
  bank: ModelBank | undefined,
): RunnableModel {
  return {
    spec,
    run: async (values, rows) => {
      const out = await session.run({
        [GRAPH.input]: new ort.Tensor('float64', values, [rows, spec.features.length]),
      })
      return scoreOutputsOf(out)
    },
    ...(bank ? { bank } : {}),
  }
}

/** Puts the model in the bank of its feature list; undefined when its file has no bank parameters. */
async function bankFor(spec: ModelSpec, key: string, bytes: Uint8Array): Promise<ModelBank | undefined> {
  bankSession ??= createSession(buildBankOnnx()).catch((err: Error) => {
    reply({ type: 'notice', message: `models will be scored one run each: no bank session (${err.message})` })
    return undefined
  })
  if (!(await bankSession)) return undefined
  const parameters = bankParameters(bytes)
  if (!parameters || parameters.features !== spec.features.length) return undefined
  const id = spec.features.join('\n')
  let bank = banks.get(id)
  if (!bank) {
    bank = new ModelBank(spec.features.length, runBank)
    banks.set(id, bank)
  }
  bank.add(key, parameters)
  return bank
}

async function runBank(
  bank: ModelBank,
  values: Float64Array,
  slots: BigInt64Array,
  rows: number,
): Promise<ScoreOutputs> {
  const session = (await bankSession) as ort.InferenceSession
  return scoreOutputsOf(await session.run(bankFeeds(bank, values, slots, rows)))
}
