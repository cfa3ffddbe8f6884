import { partitionOf } from '../common/nats.js'
import { modelName } from './model/spec.js'
import type { Alias } from './registry.js'

/** Model name → alias → what serves it (a loaded model, or its pool key inside a scoring thread). */
export type Routes<T> = Map<string, Partial<Record<Alias, T>>>

/** Whether a device is in the canary share: a stable hash of its id below `percent` of 100. */
export function inCanary(deviceId: string, percent: number): boolean {
  return percent > 0 && partitionOf(deviceId, 100) < percent
}

/**
 * The most specific model for a device: its own, its site's, then the fleet's. A device in the
 * canary share gets a model's `canary` version where there is one.
 */
export function selectRoute<T>(
  routes: Routes<T>,
  deviceId: string,
  site: string | undefined,
  canaryPercent: number,
): T | undefined {
  const canary = inCanary(deviceId, canaryPercent)
  for (const name of [modelName('device', deviceId), site ? modelName('site', site) : undefined, 'fleet']) {
    if (!name) continue
    const slots = routes.get(name)
    const model = (canary ? slots?.canary : undefined) ?? slots?.production
    if (model !== undefined) return model
  }
  return undefined
}

/**
 * selectRoute remembered per device and site, for the async scorer (it asks for every reading).
 * `clear()` whenever the routes change. Bounded; cleared when full.
 */
export class RouteCache<T> {
  private readonly known = new Map<string, { site: string | undefined; route: T | undefined }>()

  constructor(
    readonly routes: Routes<T>,
    readonly canaryPercent: number,
  ) {}

  select(deviceId: string, site: string | undefined): T | undefined {
    const hit = this.known.get(deviceId)
    if (hit && hit.site === site) return hit.route
    const route = selectRoute(this.routes, deviceId, site, this.canaryPercent)
    if (this.known.size >= 100_000) this.known.clear()
    this.known.set(deviceId, { site, route })
    return route
  }

  clear(): void {
    this.known.clear()
  }
}
