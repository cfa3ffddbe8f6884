import type { ClickHouse } from '../common/clickhouse.js'
import type { Logger } from '../common/log.js'

/**
 * The small per-device and per-minute tables the Query API reads whole (latest state, counts).
 * Their views add rows per insert — with 10,000 devices and an insert a second that is 600,000 rows
 * a minute for 10,000 devices — and ClickHouse folds them only when its background merges get to
 * them, so a read groups every unmerged row. Compacting them now and then keeps each near one row
 * per device (or minute); it costs little because they are small once folded.
 */
export const COMPACTED_TABLES = [
  'device_latest',
  'inference_latest',
  'device_counts',
  'readings_1m',
  'inference_labels_1m',
]

/** Folds each table's parts into one (`OPTIMIZE … FINAL`); returns how long it took in ms. */
export async function compactLatestTables(ch: ClickHouse): Promise<number> {
  const started = performance.now()
  for (const table of COMPACTED_TABLES)
    await ch.client.command({ query: `OPTIMIZE TABLE ${ch.table(table)} FINAL` })
  return performance.now() - started
}

/**
 * Compacts every `intervalMs` while `wrote()` says rows arrived since the last pass, until `signal`
 * aborts. A failed pass is logged and tried again at the next interval.
 */
export async function runCompactor(opts: {
  ch: ClickHouse
  intervalMs: number
  wrote: () => boolean
  log: Logger
  signal: AbortSignal
}): Promise<void> {
  const { ch, intervalMs, log, signal } = opts
  while (!signal.aborted) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, intervalMs)
      signal.addEventListener(
        'abort',
        () => {
          clearTimeout(timer)
          resolve()
        },
        { once: true },
      )
    })
    if (signal.aborted || !opts.wrote()) continue
    try {
      const ms = await compactLatestTables(ch)
      log.debug({ ms: Math.round(ms) }, 'latest-state tables compacted')
    } catch (err) {
      log.warn(
        { err: (err as Error).message },
        'compacting the latest-state tables failed; trying again later',
      )
    }
  }
}
