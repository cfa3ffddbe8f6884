import { create } from '@bufbuild/protobuf'
import { Code, ConnectError } from '@connectrpc/connect'
import type { InferResponse } from '../../../gen/vigil/inference/v1/inference_pb.js'
import {
  InferenceFailureSchema,
  type PublishRequest,
  type PublishResponse,
  PublishResponseSchema,
} from '../../../gen/vigil/ingest/v1/ingest_pb.js'
import { InferenceSchema, type Reading } from '../../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { invalidArgument } from '../../common/errors.js'
import { codeName } from '../../common/rpc.js'
import { admit, type IngestContext } from '../context.js'
import { storeFailed } from './stored.js'

/** Publish: one reading, answered after JetStream stored it; optionally scored synchronously. */
export async function publish(ctx: IngestContext, req: PublishRequest): Promise<PublishResponse> {
  if (!req.reading) throw invalidArgument('request', [{ field: 'reading', description: 'is required' }])
  const reading = req.reading
  const admission = admit(ctx, reading, 'Publish')
  if (admission.kind === 'refused') {
    await admission.kept.catch(storeFailed)
    throw invalidArgument('reading', admission.refusal.violations)
  }
  if (admission.kind === 'duplicate')
    return create(PublishResponseSchema, { eventId: admission.eventId, duplicate: true })
  // Scoring runs while the reading is being stored; the answer waits for both.
  const scoring = req.infer ? infer(ctx, reading) : undefined
  await admission.stored.catch(storeFailed)
  const response = create(PublishResponseSchema, { eventId: admission.eventId })
  if (scoring) {
    const outcome = await scoring
    if ('failure' in outcome) response.inferenceFailure = outcome.failure
    else response.inference = outcome.inference
  }
  return response
}

async function infer(ctx: IngestContext, reading: Reading) {
  try {
    const res: InferResponse = await ctx.inference.infer(
      {
        deviceId: reading.deviceId,
        features: reading.sensors,
        context: reading.meta,
        ts: reading.ts,
        eventId: reading.eventId,
      },
      { timeoutMs: ctx.config.inferenceTimeoutMs },
    )
    return {
      inference: create(InferenceSchema, {
        eventId: reading.eventId,
        deviceId: res.deviceId,
        ts: res.ts,
        score: res.score,
        label: res.label,
        anomalies: res.anomalies,
        explain: res.explain,
        model: res.model,
        features: reading.sensors,
      }),
    }
  } catch (err) {
    const e = ConnectError.from(err)
    ctx.log.warn(
      { code: codeName(e), err: e.message },
      'synchronous inference failed; reading stored without it',
    )
    const message = e.code === Code.Unavailable ? 'inference service unavailable' : e.rawMessage
    return { failure: create(InferenceFailureSchema, { code: codeName(e), message }) }
  }
}
