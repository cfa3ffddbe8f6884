// The models a process serves: follows the registry's aliases, loads each new version into the
// scoring pool (checked on a trial row first), swaps it in, and frees the old one once the requests
// already queued for it have run. A version that fails to load is refused with a log line and the
// previous one keeps serving.
import type { Logger } from '../common/log.js'
import { readSpec } from './model/onnx.js'
import type { ModelSpec } from './model/spec.js'
import type { Alias, AliasChange, ModelRegistry } from './registry.js'
import { selectRoute } from './routing.js'
import type { ScoringPool } from './runtime/pool.js'

export interface LoadedModel {
  spec: ModelSpec
  /** The pool key: `<name>@v<version>`. */
  key: string
  alias: Alias
}

export class ActiveModels {
  private readonly byName = new Map<string, Partial<Record<Alias, LoadedModel>>>()
  private readonly listeners = new Set<(change: AliasChange, model: LoadedModel | undefined) => void>()
  private serial = Promise.resolve()
  private readonly revisions = new Map<string, number>()

  constructor(
    private readonly pool: ScoringPool,
    private readonly registry: ModelRegistry,
    private readonly log: Logger,
    /** Share of devices (0..100) scored by a `canary` version where one exists. */
    private readonly canaryPercent: number,
  ) {}

  /** Loads what the aliases point at now, then follows their changes until `signal` aborts. */
  async start(signal: AbortSignal): Promise<void> {
    for (const change of await this.registry.aliasEntries()) await this.apply(change)
    void this.registry
      .watch((change) => this.apply(change), signal)
      .catch((err: Error) => {
        if (!signal.aborted) this.log.error({ err: err.message }, 'model alias watch failed')
      })
  }

  onChange(listener: (change: AliasChange, model: LoadedModel | undefined) => void): void {
    this.listeners.add(listener)
  }

  /** Applies one alias change (serialized: changes apply in the order they came). */
  apply(change: AliasChange): Promise<void> {
    const next = this.serial.then(() => this.applyNow(change))
    this.serial = next.catch(() => undefined)
    return next
  }

  private async applyNow({ name, alias, version, revision }: AliasChange): Promise<void> {
    // The watch may deliver a change after this process applied a later one directly (PromoteModel).
    const seen = this.revisions.get(`${name}.${alias}`) ?? 0
    if (revision <= seen) return
    this.revisions.set(`${name}.${alias}`, revision)
    const slots = this.byName.get(name) ?? {}
    const current = slots[alias]
    if (current?.spec.version === version) return
    let loaded: LoadedModel | undefined
    if (version !== undefined) {
      const key = `${name}@v${version}`
      try {
        const file = await this.registry.file(name, version)
        if (!file) throw new Error(`the registry has no file for ${name} v${version}`)
        const spec = readSpec(file)
        const shared = Object.values(slots).find((m) => m?.key === key)
        if (!shared) await this.pool.load(key, file, spec.features.length)
        loaded = { spec, key, alias }
      } catch (err) {
        this.log.error(
          {
            model: name,
            version,
            alias,
            err: (err as Error).message,
            serving: current?.spec.version ?? null,
          },
          'model refused: it cannot be loaded; the previous version keeps serving',
        )
        return
      }
    }
    if (loaded) slots[alias] = loaded
    else delete slots[alias]
    this.byName.set(name, slots)
    // The scoring threads route batches themselves; tell them before the old version is released.
    this.pool.route(name, alias, loaded?.key)
    if (current && !Object.values(slots).some((m) => m?.key === current.key)) this.pool.release(current.key)
    this.log.info(
      { model: name, alias, version: version ?? null, previous: current?.spec.version ?? null },
      loaded ? 'model now serving' : 'model alias removed',
    )
    for (const listener of this.listeners) listener({ name, alias, version, revision }, loaded)
  }

  /** The most specific model for a device (see selectRoute). */
  select(deviceId: string, site: string | undefined): LoadedModel | undefined {
    return selectRoute(this.byName, deviceId, site, this.canaryPercent)
  }

  /** The model an alias serves now in this process. */
  serving(name: string, alias: Alias): LoadedModel | undefined {
    return this.byName.get(name)?.[alias]
  }

  get hasFleetModel(): boolean {
    return this.byName.get('fleet')?.production !== undefined
  }

  /** Models serving whose name starts with `prefix` (for example `device-`). */
  countNamed(prefix: string): number {
    let n = 0
    for (const [name, slots] of this.byName) if (name.startsWith(prefix) && slots.production) n++
    return n
  }

  get count(): number {
    let n = 0
    for (const slots of this.byName.values()) n += Object.keys(slots).length
    return n
  }

  /** Checks that ONNX Runtime can load and run a file (before an alias points at it). */
  async check(file: Uint8Array): Promise<ModelSpec> {
    const spec = readSpec(file)
    const key = `check:${spec.name}@v${spec.version}:${Date.now()}`
    await this.pool.load(key, file, spec.features.length)
    this.pool.release(key)
    return spec
  }
}
