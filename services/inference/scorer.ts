// Scores many items at once: picks each item's model, lays the features out in the model's order,
// makes one pool request per model (the pool coalesces further) and interprets the outputs.
import { featureMatrix, type Interpretation, interpret } from './model/spec.js'
import type { ActiveModels, LoadedModel } from './models.js'
import type { ScoringPool } from './runtime/pool.js'

export interface ScoreItem {
  deviceId: string
  site: string | undefined
  features: Record<string, number>
}

export type ScoreResult =
  | { kind: 'scored'; model: LoadedModel; result: Interpretation }
  /** The model needs features the item does not have. */
  | { kind: 'missing'; model: LoadedModel; missing: string[] }
  /** No model applies (none trained yet). */
  | { kind: 'no-model' }

export async function scoreItems(
  models: ActiveModels,
  pool: ScoringPool,
  items: ScoreItem[],
): Promise<ScoreResult[]> {
  const results = new Array<ScoreResult>(items.length)
  const groups = new Map<string, { model: LoadedModel; indexes: number[] }>()
  items.forEach((item, i) => {
    const model = models.select(item.deviceId, item.site)
    if (!model) {
      results[i] = { kind: 'no-model' }
      return
    }
    const missing = model.spec.features.filter((f) => typeof item.features[f] !== 'number')
    if (missing.length > 0) {
      results[i] = { kind: 'missing', model, missing }
      return
    }
    let group = groups.get(model.key)
    if (!group) {
      group = { model, indexes: [] }
      groups.set(model.key, group)
    }
    group.indexes.push(i)
  })
  await Promise.all(
    [...groups.values()].map(async ({ model, indexes }) => {
      const features = model.spec.features
      const f = features.length
      const values = featureMatrix(
        features,
        indexes.map((i) => (items[i] as ScoreItem).features),
      )
      const out = await pool.score(model.key, values, indexes.length, f)
      indexes.forEach((itemIndex, row) => {
        results[itemIndex] = {
          kind: 'scored',
          model,
          result: interpret(model.spec, out, row, values.subarray(row * f, (row + 1) * f)),
        }
      })
    }),
  )
  return results
}
