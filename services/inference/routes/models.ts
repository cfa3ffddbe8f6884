import { create } from '@bufbuild/protobuf'
import { timestampFromDate } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import {
  type GetModelRequest,
  type GetModelResponse,
  GetModelResponseSchema,
  type ListModelsRequest,
  type ListModelsResponse,
  ListModelsResponseSchema,
  type Model,
  ModelSchema,
  ModelScope,
  type PromoteModelRequest,
  type PromoteModelResponse,
  PromoteModelResponseSchema,
  type RollbackModelRequest,
  type RollbackModelResponse,
  RollbackModelResponseSchema,
} from '../../../gen/vigil/inference/v1/inference_pb.js'
import { invalidArgument, type Violation } from '../../common/errors.js'
import type { InferenceContext } from '../context.js'
import { InvalidModelError } from '../model/onnx.js'
import type { ModelScopeName } from '../model/spec.js'
import { ALIASES, type Alias, isAlias, type StoredModel } from '../registry.js'

const SCOPES: Record<ModelScopeName, ModelScope> = {
  fleet: ModelScope.FLEET,
  site: ModelScope.SITE,
  device: ModelScope.DEVICE,
}
const NAME = /^[A-Za-z0-9_=-]{1,200}$/

function modelMessage(stored: StoredModel, aliases: Partial<Record<Alias, number>> = {}): Model {
  const s = stored.spec
  return create(ModelSchema, {
    ref: { name: s.name, version: s.version },
    scope: SCOPES[s.scope],
    scopeKey: s.scopeKey,
    features: s.features,
    components: s.metrics.components ?? s.eigenvalues.length,
    speLimit: s.speLimit,
    t2Limit: s.t2Limit,
    trainingRows: BigInt(s.training.rows),
    trainingStart: timestampFromDate(new Date(s.training.start)),
    trainingEnd: timestampFromDate(new Date(s.training.end)),
    metrics: s.metrics,
    aliases: ALIASES.filter((a) => aliases[a] === s.version),
    createdAt: timestampFromDate(new Date(s.createdAt)),
    sizeBytes: BigInt(stored.sizeBytes),
    source: s.training.source,
    confidence: s.confidence,
  })
}

function checkName(name: string, violations: Violation[]): void {
  if (!name)
    violations.push({ field: 'name', description: 'is required (for example "fleet" or "device-abc")' })
  else if (!NAME.test(name))
    violations.push({ field: 'name', description: 'is not a model name (letters, digits, _ - =)' })
}

function aliasOf(value: string, violations: Violation[]): Alias {
  const alias = value || 'production'
  if (!isAlias(alias))
    violations.push({ field: 'alias', description: `must be one of ${ALIASES.join(', ')}` })
  return alias as Alias
}

async function find(ctx: InferenceContext, name: string, version: number): Promise<StoredModel> {
  const found = (await ctx.registry.list(name)).find((m) => m.spec.version === version)
  if (!found) throw new ConnectError(`model ${name} v${version} does not exist`, Code.NotFound)
  return found
}

export async function listModels(ctx: InferenceContext, req: ListModelsRequest): Promise<ListModelsResponse> {
  if (req.name) {
    const violations: Violation[] = []
    checkName(req.name, violations)
    if (violations.length > 0) throw invalidArgument('ListModelsRequest', violations)
  }
  const [models, aliases] = await Promise.all([
    ctx.registry.list(req.name || undefined),
    ctx.registry.aliasTable(),
  ])
  const b = ctx.bootstrap
  return create(ListModelsResponseSchema, {
    models: models.map((m) => modelMessage(m, aliases.get(m.spec.name))),
    bootstrap: { state: b.state, rowsSeen: b.rowsSeen, rowsNeeded: b.rowsNeeded, message: b.message },
  })
}

export async function getModel(ctx: InferenceContext, req: GetModelRequest): Promise<GetModelResponse> {
  const violations: Violation[] = []
  checkName(req.name, violations)
  if (violations.length > 0) throw invalidArgument('GetModelRequest', violations)
  const version = req.version || (await ctx.registry.alias(req.name, 'production'))
  if (!version) throw new ConnectError(`model ${req.name} has no production version`, Code.NotFound)
  const stored = await find(ctx, req.name, version)
  return create(GetModelResponseSchema, {
    model: modelMessage(stored, (await ctx.registry.aliasTable()).get(req.name)),
  })
}

/** Points `alias` at `version` once ONNX Runtime loaded and ran it here; returns the model and the old version. */
async function pointAlias(ctx: InferenceContext, name: string, alias: Alias, version: number) {
  const stored = await find(ctx, name, version)
  const file = await ctx.registry.file(name, version)
  if (!file) throw new ConnectError(`model ${name} v${version} has no file`, Code.NotFound)
  try {
    await ctx.models.check(file)
  } catch (err) {
    if (err instanceof InvalidModelError) {
      ctx.metrics.refused.inc()
      throw new ConnectError(
        `model ${name} v${version} cannot serve: ${err.message}`,
        Code.FailedPrecondition,
      )
    }
    throw err
  }
  const { previous, change } = await ctx.registry.setAlias(name, alias, version)
  // Apply here at once (the alias watch would too, a moment later): the answer means "serving".
  await ctx.models.apply(change)
  ctx.log.info({ model: name, alias, version, previous }, 'alias moved')
  return {
    model: modelMessage(stored, (await ctx.registry.aliasTable()).get(name)),
    previousVersion: previous,
  }
}

export async function promoteModel(
  ctx: InferenceContext,
  req: PromoteModelRequest,
): Promise<PromoteModelResponse> {
  const violations: Violation[] = []
  checkName(req.name, violations)
  if (req.version === 0) violations.push({ field: 'version', description: 'is required (1 or more)' })
  const alias = aliasOf(req.alias, violations)
  if (violations.length > 0) throw invalidArgument('PromoteModelRequest', violations)
  return create(PromoteModelResponseSchema, await pointAlias(ctx, req.name, alias, req.version))
}

export async function rollbackModel(
  ctx: InferenceContext,
  req: RollbackModelRequest,
): Promise<RollbackModelResponse> {
  const violations: Violation[] = []
  checkName(req.name, violations)
  const alias = aliasOf(req.alias, violations)
  if (violations.length > 0) throw invalidArgument('RollbackModelRequest', violations)
  const previous = await ctx.registry.previousAlias(req.name, alias)
  if (previous === undefined)
    throw new ConnectError(
      `${req.name}'s ${alias} alias never pointed at another version`,
      Code.FailedPrecondition,
    )
  return create(RollbackModelResponseSchema, await pointAlias(ctx, req.name, alias, previous))
}
