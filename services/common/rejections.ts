import { create, toBinary } from '@bufbuild/protobuf'
import { type Timestamp, timestampNow } from '@bufbuild/protobuf/wkt'
import type { JetStreamClient } from '@nats-io/jetstream'
import { Counter, type Registry } from 'prom-client'
import { RejectedSchema, type RejectReason } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import type { Violation } from './errors.js'
import { registeredOnce } from './metrics.js'
import { rejectedSubject } from './nats.js'

/** At most this much of a rejected payload is kept. */
export const REJECTED_RAW_MAX = 8 * 1024

export interface RejectedInput {
  /** `mqtt:<topic>`, `rpc:<method>` or `consumer:<durable>`. */
  source: string
  raw: Uint8Array
  reason: RejectReason
  detail: string
  violations?: Violation[]
  deviceId?: string
  receivedAt?: Timestamp
}

/**
 * Stores a dead letter on `telemetry.rejected.<reason>` (stream REJECTED) and resolves once
 * JetStream acknowledged it, so a caller acknowledges its sender only for what is kept.
 */
export async function keepRejected(js: JetStreamClient, input: RejectedInput): Promise<void> {
  const rejected = create(RejectedSchema, {
    source: input.source,
    raw: input.raw.subarray(0, REJECTED_RAW_MAX),
    rawSize: input.raw.length,
    reason: input.reason,
    detail: input.detail.slice(0, 2_000),
    violations: (input.violations ?? []).slice(0, 50),
    deviceId: input.deviceId ?? '',
    receivedAt: input.receivedAt ?? timestampNow(),
  })
  await js.publish(rejectedSubject(input.reason), toBinary(RejectedSchema, rejected))
}

/** `vigil_rejected_total{reason, source}`: what was refused, by reason and by entry point. */
export function rejectedCounter(registry: Registry): Counter<'reason' | 'source'> {
  const name = 'vigil_rejected_total'
  return registeredOnce(
    registry,
    name,
    () =>
      new Counter({
        name,
        help: 'Payloads refused and kept on telemetry.rejected.<reason>, by reason and entry point (mqtt, rpc, consumer).',
        labelNames: ['reason', 'source'],
        registers: [registry],
      }),
  )
}
