import { create } from '@bufbuild/protobuf'
import {
  type PublishBatchRequest,
  type PublishBatchResponse,
  PublishBatchResponseSchema,
  type Rejection,
  RejectionSchema,
} from '../../../gen/vigil/ingest/v1/ingest_pb.js'
import { invalidArgument } from '../../common/errors.js'
import { admit, type IngestContext } from '../context.js'
import { storeFailed } from './stored.js'

export const PUBLISH_BATCH_MAX = 10_000

/**
 * PublishBatch: stores every valid reading, answers which were refused and why, and flags the ones
 * already stored. Answered after JetStream stored all accepted readings.
 */
export async function publishBatch(
  ctx: IngestContext,
  req: PublishBatchRequest,
): Promise<PublishBatchResponse> {
  if (req.readings.length > PUBLISH_BATCH_MAX) {
    throw invalidArgument('request', [
      {
        field: 'readings',
        description: `holds ${req.readings.length}; at most ${PUBLISH_BATCH_MAX} per call`,
      },
    ])
  }
  const seen = new Set<string>()
  const eventIds: string[] = []
  const rejections: Rejection[] = []
  const duplicateIndexes: number[] = []
  const stored: Promise<void>[] = []
  let accepted = 0
  for (const [index, reading] of req.readings.entries()) {
    const admission = admit(ctx, reading, 'PublishBatch', seen)
    if (admission.kind === 'refused') {
      stored.push(admission.kept)
      eventIds.push('')
      rejections.push(
        create(RejectionSchema, {
          index,
          reason: admission.refusal.reason,
          violations: admission.refusal.violations,
        }),
      )
      continue
    }
    eventIds.push(admission.eventId)
    if (admission.kind === 'duplicate') duplicateIndexes.push(index)
    else {
      accepted++
      stored.push(admission.stored)
    }
  }
  await Promise.all(stored).catch(storeFailed)
  return create(PublishBatchResponseSchema, {
    accepted,
    rejections,
    eventIds,
    duplicateIndexes,
  })
}
