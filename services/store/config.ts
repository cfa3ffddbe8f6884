import type { CommonConfig, EnvReader } from '../common/config.js'

export interface StoreConfig extends CommonConfig {
  retentionDays: number
  insertMaxRows: number
  insertLingerMs: number
  /** How often the latest-state tables are compacted while rows arrive (see compaction.ts). */
  compactIntervalMs: number
}

/** The store's own variables (see README.md). */
export function readStoreConfig(r: EnvReader, common: CommonConfig): StoreConfig {
  return {
    ...common,
    retentionDays: r.int('VIGIL_RETENTION_DAYS', 30, 1, 3650),
    insertMaxRows: r.int('VIGIL_STORE_INSERT_ROWS', 20_000, 100, 1_000_000),
    insertLingerMs: r.int('VIGIL_STORE_LINGER_MS', 1_000, 1, 60_000),
    compactIntervalMs: r.int('VIGIL_STORE_COMPACT_INTERVAL_MS', 60_000, 1_000, 3_600_000),
  }
}
