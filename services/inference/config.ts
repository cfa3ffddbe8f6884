import { availableParallelism } from 'node:os'
import type { CommonConfig, EnvReader } from '../common/config.js'

export interface InferenceConfig extends CommonConfig {
  /** ONNX Runtime worker threads (each holds every model); default: the cores, at most 4. */
  threads: number
  /** Execution provider asked for; `cuda` falls back to the CPU with a log line where it cannot load. */
  provider: 'cpu' | 'cuda'
  /** Run the asynchronous worker on telemetry.raw.> in this process. */
  worker: boolean
  /** Batches the async worker handles at once. */
  workerConcurrency: number
  /** Most rows in one coalesced ONNX Runtime run. */
  maxBatchRows: number
  /** Readings the bootstrap fleet model is trained from; 0 turns the bootstrap off. */
  bootstrapRows: number
  /** Readings a device's bootstrap model is trained from; 0 turns device bootstrap off. */
  bootstrapDeviceRows: number
  /** Device models the bootstrap makes at most. */
  bootstrapDeviceModels: number
  /** Share of devices (0..100) scored by a `canary` version where one exists. */
  canaryPercent: number
}

/** The inference service's own variables (see README.md). */
export function readInferenceConfig(r: EnvReader, common: CommonConfig): InferenceConfig {
  return {
    ...common,
    threads: r.int('VIGIL_INFERENCE_THREADS', Math.min(4, availableParallelism()), 1, 64),
    provider: r.oneOf('VIGIL_INFERENCE_PROVIDER', ['cpu', 'cuda'] as const, 'cpu'),
    worker: r.bool('VIGIL_INFERENCE_WORKER', true),
    workerConcurrency: r.int('VIGIL_INFERENCE_CONCURRENCY', 4, 1, 256),
    maxBatchRows: r.int('VIGIL_INFERENCE_MAX_BATCH_ROWS', 4096, 1, 100_000),
    bootstrapRows: r.int('VIGIL_BOOTSTRAP_ROWS', 500, 0, 1_000_000),
    bootstrapDeviceRows: r.int('VIGIL_BOOTSTRAP_DEVICE_ROWS', 200, 0, 100_000),
    bootstrapDeviceModels: r.int('VIGIL_BOOTSTRAP_DEVICE_MODELS', 1000, 0, 1_000_000),
    canaryPercent: r.int('VIGIL_CANARY_PERCENT', 10, 0, 100),
  }
}
