import { create } from '@bufbuild/protobuf'
import { timestampNow } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import {
  type InferBatchRequest,
  type InferBatchResponse,
  InferBatchResponseSchema,
  type InferRequest,
  type InferResponse,
  InferResponseSchema,
} from '../../../gen/vigil/inference/v1/inference_pb.js'
import { invalidArgument, type Violation } from '../../common/errors.js'
import { normalizeSensorName, validateInferRequest } from '../../common/validation.js'
import type { InferenceContext } from '../context.js'
import { inferenceFields } from '../runtime/batch.js'
import { type ScoreItem, type ScoreResult, scoreItems } from '../scorer.js'

/** At most this many requests in one InferBatch. */
export const MAX_BATCH = 10_000

function item(req: InferRequest): ScoreItem {
  const features: Record<string, number> = {}
  for (const [name, value] of Object.entries(req.features)) features[normalizeSensorName(name)] = value
  return { deviceId: req.deviceId, site: req.context.site, features }
}

/** Violations of a result that could not be scored; throws FailedPrecondition when no model exists. */
function resultViolations(ctx: InferenceContext, res: ScoreResult, prefix: string): Violation[] {
  if (res.kind === 'no-model') throw new ConnectError(ctx.bootstrap.message, Code.FailedPrecondition)
  if (res.kind !== 'missing') return []
  return res.missing.map((f) => ({
    field: `${prefix}features["${f}"]`,
    description: `missing: model ${res.model.spec.name} v${res.model.spec.version} needs it`,
  }))
}

function response(ctx: InferenceContext, req: InferRequest, res: ScoreResult): InferResponse {
  if (res.kind !== 'scored') throw new Error('unreachable: unscored results are refused before')
  ctx.metrics.scored.inc({ path: 'rpc', label: res.result.label })
  ctx.metrics.score.observe(res.result.score)
  return create(InferResponseSchema, {
    deviceId: req.deviceId,
    ts: req.ts ?? timestampNow(),
    eventId: req.eventId,
    ...inferenceFields(res.model.spec, res.result),
  })
}

/** Infer: one set of features, scored by the most specific model for the device. */
export async function infer(ctx: InferenceContext, req: InferRequest): Promise<InferResponse> {
  const violations = validateInferRequest(req)
  if (violations.length > 0) throw invalidArgument('InferRequest', violations)
  const [res] = await scoreItems(ctx.models, ctx.pool, [item(req)])
  const missing = resultViolations(ctx, res as ScoreResult, '')
  if (missing.length > 0) throw invalidArgument('InferRequest', missing)
  return response(ctx, req, res as ScoreResult)
}

/** InferBatch: many at once, one run per model; any bad request fails the call naming its index. */
export async function inferBatch(ctx: InferenceContext, req: InferBatchRequest): Promise<InferBatchResponse> {
  if (req.requests.length > MAX_BATCH)
    throw invalidArgument('InferBatchRequest', [
      { field: 'requests', description: `holds ${req.requests.length}; at most ${MAX_BATCH} are accepted` },
    ])
  const violations = req.requests.flatMap((r, i) =>
    validateInferRequest(r).map((v) => ({ field: `requests[${i}].${v.field}`, description: v.description })),
  )
  if (violations.length > 0) throw invalidArgument('InferBatchRequest', violations)
  const results = await scoreItems(ctx.models, ctx.pool, req.requests.map(item))
  const missing = results.flatMap((res, i) => resultViolations(ctx, res, `requests[${i}].`))
  if (missing.length > 0) throw invalidArgument('InferBatchRequest', missing)
  return create(InferBatchResponseSchema, {
    results: results.map((res, i) => response(ctx, req.requests[i] as InferRequest, res)),
  })
}
