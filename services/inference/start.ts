import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { BUS, type NatsConnection, registerConsumerLag } from '../common/nats.js'
import type { ServiceKit } from '../common/service.js'
import { Bootstrap } from './bootstrap.js'
import type { InferenceConfig } from './config.js'
import type { InferenceContext } from './context.js'
import { DeviceBootstrap } from './device-bootstrap.js'
import { inferenceMetrics } from './metrics.js'
import { ActiveModels } from './models.js'
import { ModelRegistry } from './registry.js'
import { inferenceRoutes } from './routes/index.js'
import { ScoringPool } from './runtime/pool.js'
import { runInferenceWorker, WORKER_DURABLE } from './worker.js'

/**
 * Everything an inference process runs besides its server: the scoring threads, the models
 * following the registry, the bootstrap model and (unless turned off) the async worker.
 */
export async function startInference(
  kit: ServiceKit<InferenceConfig>,
  nc: NatsConnection,
  owner: string,
): Promise<InferenceContext & { routes: ReturnType<typeof inferenceRoutes> }> {
  const { config, log, lifecycle } = kit
  const metrics = inferenceMetrics(kit.metrics.registry)
  const pool = new ScoringPool({
    threads: config.threads,
    provider: config.provider,
    canaryPercent: config.canaryPercent,
    log,
    maxBatchRows: config.maxBatchRows,
    onRun: (rows, seconds) => {
      metrics.runRows.observe(rows)
      metrics.runSeconds.observe(seconds)
    },
  })
  lifecycle.onStop('scoring threads', () => pool.close())
  const registry = await ModelRegistry.open(nc)
  const models = new ActiveModels(pool, registry, log, config.canaryPercent)
  models.onChange(() => metrics.models.set(models.count))
  await models.start(lifecycle.signal)
  metrics.models.set(models.count)
  const js = jetstream(nc)
  const bootstrap = new Bootstrap({ js, registry, models, log, metrics, rows: config.bootstrapRows, owner })
  const bootstrapped = bootstrap.run(lifecycle.signal).catch((err: Error) => {
    if (!lifecycle.signal.aborted) log.error({ err: err.message }, 'bootstrap stopped')
  })
  lifecycle.onStop('bootstrap', () => bootstrapped)
  const jsm = await jetstreamManager(nc)
  if (config.bootstrapDeviceRows > 0 && config.bootstrapDeviceModels > 0) {
    const devices = new DeviceBootstrap({
      js,
      jsm,
      registry,
      models,
      metrics,
      log,
      rows: config.bootstrapDeviceRows,
      maxModels: config.bootstrapDeviceModels,
      maxPending: 1_000,
      owner,
    })
    const running = devices.run(lifecycle.signal).catch((err: Error) => {
      if (!lifecycle.signal.aborted) log.error({ err: err.message }, 'device bootstrap stopped')
    })
    lifecycle.onStop('device bootstrap', () => running)
  }
  if (config.worker) {
    registerConsumerLag(kit.metrics.registry, jsm, [
      { stream: BUS.streams.telemetry, durable: WORKER_DURABLE },
    ])
    const worker = runInferenceWorker({
      nc,
      js,
      jsm,
      models,
      pool,
      log,
      metrics,
      signal: lifecycle.signal,
      concurrency: config.workerConcurrency,
    }).catch((err: Error) => log.error({ err: err.message }, 'async worker stopped'))
    lifecycle.onStop('async worker', () => worker)
  }
  const ctx: InferenceContext = { config, log, models, pool, registry, bootstrap, metrics }
  return { ...ctx, routes: inferenceRoutes(ctx) }
}
