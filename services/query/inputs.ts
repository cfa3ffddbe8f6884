import { type Duration, durationMs, type Timestamp, timestampMs } from '@bufbuild/protobuf/wkt'
import type { Violation } from '../common/errors.js'
import { invalidArgument } from '../common/errors.js'
import { validateDeviceId } from '../common/validation.js'

export const MAX_SPAN_MS = 400 * 86_400_000
export const MAX_BUCKETS = 5_000
export const MAX_PAGE = 1_000

/** A time range from request fields, checked: start before end, span bounded. */
export function timeRange(
  start: Timestamp | undefined,
  end: Timestamp | undefined,
  defaults: { spanMs: number; requireStart?: boolean },
): { startMs: number; endMs: number } {
  const violations: Violation[] = []
  const endMs = end ? timestampMs(end) : Date.now()
  if (!start && defaults.requireStart) violations.push({ field: 'start', description: 'is required' })
  const startMs = start ? timestampMs(start) : endMs - defaults.spanMs
  if (startMs >= endMs) violations.push({ field: 'start', description: 'must be before end' })
  if (endMs - startMs > MAX_SPAN_MS)
    violations.push({ field: 'end', description: 'the range may span at most 400 days' })
  if (violations.length > 0) throw invalidArgument('time range', violations)
  return { startMs, endMs }
}

/** A page size (default 100, at most 1000) and an offset from a page token. */
export function page(pageSize: number, pageToken: string): { limit: number; offset: number } {
  const violations: Violation[] = []
  if (pageSize > MAX_PAGE) violations.push({ field: 'page_size', description: `must be at most ${MAX_PAGE}` })
  let offset = 0
  if (pageToken !== '') {
    offset = Number(pageToken)
    if (!Number.isSafeInteger(offset) || offset < 0) {
      violations.push({ field: 'page_token', description: 'is not a token from a previous answer' })
    }
  }
  if (violations.length > 0) throw invalidArgument('paging', violations)
  return { limit: pageSize === 0 ? 100 : pageSize, offset }
}

/** A required, well-formed device id. */
export function deviceId(id: string): string {
  const violations = validateDeviceId(id)
  if (violations.length > 0) throw invalidArgument('device id', violations)
  return id
}

export function durationOrZero(d: Duration | undefined): number {
  return d ? durationMs(d) : 0
}
