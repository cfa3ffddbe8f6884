import type { ConnectRouter } from '@connectrpc/connect'
import { InferenceService } from '../../../gen/vigil/inference/v1/inference_pb.js'
import type { InferenceContext } from '../context.js'
import { infer, inferBatch } from './infer.js'
import { getModel, listModels, promoteModel, rollbackModel } from './models.js'

/** vigil.inference.v1.InferenceService. */
export function inferenceRoutes(ctx: InferenceContext) {
  return (router: ConnectRouter) =>
    router.service(InferenceService, {
      infer: (req) => infer(ctx, req),
      inferBatch: (req) => inferBatch(ctx, req),
      listModels: (req) => listModels(ctx, req),
      getModel: (req) => getModel(ctx, req),
      promoteModel: (req) => promoteModel(ctx, req),
      rollbackModel: (req) => rollbackModel(ctx, req),
    })
}
