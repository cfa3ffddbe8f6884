import { toBinary } from '@bufbuild/protobuf'
import { timestampNow } from '@bufbuild/protobuf/wkt'
import { type Client, createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import type { JetStreamClient } from '@nats-io/jetstream'
import type { Registry } from 'prom-client'
import { InferenceService } from '../../gen/vigil/inference/v1/inference_pb.js'
import { type Reading, ReadingSchema } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import type { ReadingBatcher } from '../common/batcher.js'
import { bearer, outboundTls } from '../common/credentials.js'
import type { Logger } from '../common/log.js'
import { rejectReasonToken } from '../common/nats.js'
import { canonicalizeReading, type Refusal } from '../common/readings.js'
import { keepRejected, rejectedCounter } from '../common/rejections.js'
import { circuitBreaker, retryUnavailable } from '../common/resilience.js'
import { activeSpanContext } from '../common/tracing.js'
import type { IngestConfig } from './config.js'
import { RecentIds } from './recent-ids.js'

/** What the routes share; built once in main.ts, or by tests with their own parts. */
export interface IngestContext {
  config: IngestConfig
  log: Logger
  js: JetStreamClient
  batcher: ReadingBatcher
  inference: Client<typeof InferenceService>
  recent: RecentIds
  registry: Registry
}

export function createIngestContext(
  parts: Omit<IngestContext, 'inference' | 'recent'> & Partial<IngestContext>,
) {
  return {
    ...parts,
    inference:
      parts.inference ??
      createClient(
        InferenceService,
        createConnectTransport({
          baseUrl: parts.config.inferenceAddr,
          httpVersion: '2',
          nodeOptions: outboundTls(parts.config.tls),
          // Outermost first: the breaker sees the outcome after the retry.
          interceptors: [
            circuitBreaker({ target: 'inference', registry: parts.registry }),
            retryUnavailable({ attempts: 2 }),
            ...bearer(parts.config.token),
          ],
        }),
      ),
    recent: parts.recent ?? new RecentIds(),
  } satisfies IngestContext
}

/** One reading's fate: refused (and being kept as a dead letter), a duplicate, or on its way to JetStream. */
export type Admission =
  | { kind: 'refused'; refusal: Refusal; kept: Promise<void> }
  | { kind: 'duplicate'; eventId: string }
  | { kind: 'accepted'; eventId: string; stored: Promise<void> }

/**
 * Validates and canonicalizes a reading with the same code as the bridge, then hands it to the
 * shared batcher, so concurrent RPCs fill the same partition batches. A refused reading is kept on
 * `telemetry.rejected.<reason>`; callers await `kept` before they answer. The batcher gives up after
 * VIGIL_INGEST_STORE_TIMEOUT_MS, so `stored` always settles.
 */
export function admit(ctx: IngestContext, reading: Reading, method: string, seen?: Set<string>): Admission {
  const refusal = canonicalizeReading(reading, timestampNow())
  if (refusal) {
    rejectedCounter(ctx.registry).inc({ reason: rejectReasonToken(refusal.reason), source: 'rpc' })
    const kept = keepRejected(ctx.js, {
      source: `rpc:${method}`,
      raw: toBinary(ReadingSchema, reading),
      reason: refusal.reason,
      detail: refusal.detail,
      violations: refusal.violations,
      ...(refusal.deviceId ? { deviceId: refusal.deviceId } : {}),
    })
    return { kind: 'refused', refusal, kept }
  }
  const eventId = reading.eventId
  if (ctx.recent.has(eventId) || seen?.has(eventId)) return { kind: 'duplicate', eventId }
  seen?.add(eventId)
  // Tracing (when on): the RPC's span is the reading's.
  const stored = ctx.batcher.store(reading, activeSpanContext()).then(() => ctx.recent.add(eventId))
  return { kind: 'accepted', eventId, stored }
}
