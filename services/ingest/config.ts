import { readBatchConfig } from '../common/batcher.js'
import type { CommonConfig, EnvReader } from '../common/config.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { readTokenSource, type TokenSource } from '../common/credentials.js'

export interface IngestConfig extends CommonConfig {
  batchMax: number
  batchLingerMs: number
  /** Where `Publish(infer=true)` sends readings to be scored. */
  inferenceAddr: string
  inferenceTimeoutMs: number
  /** The service token sent to the inference service (VIGIL_TOKEN / VIGIL_TOKEN_FILE). */
  token?: TokenSource
  /** How long an RPC waits for JetStream before answering Unavailable. */
  storeTimeoutMs: number
}

/** The ingest service's own variables (see README.md). */
export function readIngestConfig(r: EnvReader, common: CommonConfig): IngestConfig {
  return {
    ...common,
    ...readBatchConfig(r),
    inferenceAddr: r.url('VIGIL_INFERENCE_ADDR', `http://127.0.0.1:${DEFAULT_PORTS.inference}`, [
      'http',
      'https',
    ])!,
    inferenceTimeoutMs: r.int('VIGIL_INFERENCE_TIMEOUT_MS', 2_000, 10, 60_000),
    token: readTokenSource(r),
    storeTimeoutMs: r.int('VIGIL_INGEST_STORE_TIMEOUT_MS', 10_000, 100, 600_000),
  }
}
