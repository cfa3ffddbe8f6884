import { create } from '@bufbuild/protobuf'
import {
  type PublishStreamRequest,
  type PublishStreamResponse,
  PublishStreamResponseSchema,
  type Rejection,
  RejectionSchema,
} from '../../../gen/vigil/ingest/v1/ingest_pb.js'
import { admit, type IngestContext } from '../context.js'
import { storeFailed } from './stored.js'

const MAX_REPORTED_REJECTIONS = 1_000
/** Readings of one stream waiting for JetStream at most; the stream is read no faster. */
const MAX_IN_FLIGHT = 5_000

/** PublishStream: a client stream of readings, answered once it ends and everything is stored. */
export async function publishStream(
  ctx: IngestContext,
  requests: AsyncIterable<PublishStreamRequest>,
): Promise<PublishStreamResponse> {
  let index = 0
  let accepted = 0
  let rejected = 0
  let duplicates = 0
  const rejections: Rejection[] = []
  const inFlight = new Set<Promise<void>>()
  let failure: unknown
  const track = (promise: Promise<void>) => {
    const p: Promise<void> = promise.then(
      () => void inFlight.delete(p),
      (err) => {
        inFlight.delete(p)
        failure ??= err
      },
    )
    inFlight.add(p)
  }
  for await (const req of requests) {
    const position = index++
    if (!req.reading) {
      rejected++
      continue
    }
    const admission = admit(ctx, req.reading, 'PublishStream')
    if (admission.kind === 'refused') {
      rejected++
      track(admission.kept)
      if (rejections.length < MAX_REPORTED_REJECTIONS) {
        rejections.push(
          create(RejectionSchema, {
            index: position,
            reason: admission.refusal.reason,
            violations: admission.refusal.violations,
          }),
        )
      }
      continue
    }
    if (admission.kind === 'duplicate') {
      duplicates++
      continue
    }
    accepted++
    track(admission.stored)
    if (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight)
  }
  await Promise.all(inFlight)
  if (failure) storeFailed(failure)
  return create(PublishStreamResponseSchema, { accepted, rejected, rejections, duplicates })
}
