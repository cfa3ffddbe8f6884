import type { Logger } from '../common/log.js'
import type { Bootstrap } from './bootstrap.js'
import type { InferenceConfig } from './config.js'
import type { InferenceMetrics } from './metrics.js'
import type { ActiveModels } from './models.js'
import type { ModelRegistry } from './registry.js'
import type { ScoringPool } from './runtime/pool.js'

/** What the inference handlers work with. */
export interface InferenceContext {
  config: InferenceConfig
  log: Logger
  models: ActiveModels
  pool: ScoringPool
  registry: ModelRegistry
  bootstrap: Bootstrap
  metrics: InferenceMetrics
}
