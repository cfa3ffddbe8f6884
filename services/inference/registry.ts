// The model registry on NATS: ONNX files in the Object Store bucket `models` (one object per
// version, `<name>/v<version>`), aliases in the KV bucket `model-aliases` (key
// `<name>.<alias>`, value the version). KV history keeps the aliases' past, which is what a
// rollback returns to.
import { jetstream } from '@nats-io/jetstream'
import { type KV, Kvm } from '@nats-io/kv'
import { type ObjectStore, Objm } from '@nats-io/obj'
import { BUS, type NatsConnection } from '../common/nats.js'
import { readSpec, withVersion } from './model/onnx.js'
import type { ModelSpec } from './model/spec.js'

export const ALIASES = ['production', 'canary'] as const
export type Alias = (typeof ALIASES)[number]

export interface StoredModel {
  spec: ModelSpec
  sizeBytes: number
}

export interface AliasChange {
  name: string
  alias: Alias
  /** Undefined when the alias was deleted. */
  version: number | undefined
  /** The KV revision of the change: later changes have higher ones (stale ones are ignored). */
  revision: number
}

const SPEC_KEY = 'vigil-model'
const objectName = (name: string, version: number) => `${name}/v${version}`
const aliasKey = (name: string, alias: Alias) => `${name}.${alias}`

export function isAlias(value: string): value is Alias {
  return (ALIASES as readonly string[]).includes(value)
}

function parseAliasKey(key: string): { name: string; alias: Alias } | undefined {
  const dot = key.lastIndexOf('.')
  const alias = key.slice(dot + 1)
  if (dot <= 0 || !isAlias(alias)) return undefined
  return { name: key.slice(0, dot), alias }
}

export class ModelRegistry {
  private constructor(
    readonly objects: ObjectStore,
    readonly aliases: KV,
  ) {}

  static async open(nc: NatsConnection): Promise<ModelRegistry> {
    const js = jetstream(nc)
    return new ModelRegistry(
      await new Objm(js).open(BUS.objectStore.models),
      await new Kvm(js).open(BUS.kv.modelAliases),
    )
  }

  /** Stores a model file as the next version of its name; returns the spec as stored. */
  async store(file: Uint8Array): Promise<StoredModel> {
    const name = readSpec(file).name
    for (let attempt = 0; ; attempt++) {
      const version = (await this.versions(name)).reduce((a, b) => Math.max(a, b), 0) + 1
      const { bytes, spec } = withVersion(file, version)
      // Two trainers racing for one version: the second sees the object and takes the next one.
      if (await this.objects.info(objectName(name, version))) {
        if (attempt < 5) continue
        throw new Error(`could not find a free version for model ${name}`)
      }
      const summary = { ...spec, loadings: [], eigenvalues: [], residualEigenvalues: [], mean: [], scale: [] }
      await this.objects.putBlob(
        {
          name: objectName(name, version),
          description: `${name} v${version}`,
          metadata: { [SPEC_KEY]: JSON.stringify(summary) },
        },
        bytes,
      )
      return { spec, sizeBytes: bytes.length }
    }
  }

  private async versions(name: string): Promise<number[]> {
    const prefix = `${name}/v`
    return (await this.objects.list())
      .filter((o) => !o.deleted && o.name.startsWith(prefix))
      .map((o) => Number(o.name.slice(prefix.length)))
      .filter((v) => Number.isInteger(v))
  }

  /**
   * Every stored model (summaries: the spec without its matrices), by name then version.
   * `name` narrows to one model.
   */
  async list(name?: string): Promise<StoredModel[]> {
    const out: StoredModel[] = []
    for (const info of await this.objects.list()) {
      if (info.deleted) continue
      const raw = info.metadata?.[SPEC_KEY]
      if (!raw) continue
      const spec = JSON.parse(raw) as ModelSpec
      if (name && spec.name !== name) continue
      out.push({ spec, sizeBytes: info.size })
    }
    return out.sort((a, b) => a.spec.name.localeCompare(b.spec.name) || a.spec.version - b.spec.version)
  }

  /** The ONNX file of one version, or undefined. */
  async file(name: string, version: number): Promise<Uint8Array | undefined> {
    return (await this.objects.getBlob(objectName(name, version))) ?? undefined
  }

  /** Where every alias points now: name → alias → version. */
  async aliasTable(): Promise<Map<string, Partial<Record<Alias, number>>>> {
    const table = new Map<string, Partial<Record<Alias, number>>>()
    const keys = await this.aliases.keys()
    for await (const key of keys) {
      const parsed = parseAliasKey(key)
      if (!parsed) continue
      const entry = await this.aliases.get(key)
      if (entry?.operation !== 'PUT') continue
      const row = table.get(parsed.name) ?? {}
      row[parsed.alias] = Number(entry.string())
      table.set(parsed.name, row)
    }
    return table
  }

  async alias(name: string, alias: Alias): Promise<number | undefined> {
    const entry = await this.aliases.get(aliasKey(name, alias))
    return entry && entry.operation === 'PUT' ? Number(entry.string()) : undefined
  }

  /** Every alias as it is now, as changes (what a process applies at start). */
  async aliasEntries(): Promise<AliasChange[]> {
    const out: AliasChange[] = []
    for await (const key of await this.aliases.keys()) {
      const parsed = parseAliasKey(key)
      const entry = parsed ? await this.aliases.get(key) : null
      if (!parsed || entry?.operation !== 'PUT') continue
      out.push({ ...parsed, version: Number(entry.string()), revision: entry.revision })
    }
    return out
  }

  /** Points an alias at a version; returns the version it pointed at before (0 when none) and the change. */
  async setAlias(
    name: string,
    alias: Alias,
    version: number,
  ): Promise<{ previous: number; change: AliasChange }> {
    const previous = (await this.alias(name, alias)) ?? 0
    const revision = await this.aliases.put(aliasKey(name, alias), String(version))
    return { previous, change: { name, alias, version, revision } }
  }

  /** The version an alias pointed at before its current one, from the KV history. */
  async previousAlias(name: string, alias: Alias): Promise<number | undefined> {
    const values: number[] = []
    const history = await this.aliases.history({ key: aliasKey(name, alias) })
    for await (const e of history) if (e.operation === 'PUT') values.push(Number(e.string()))
    const current = values.at(-1)
    for (let i = values.length - 2; i >= 0; i--) if (values[i] !== current) return values[i]
    return undefined
  }

  /** Calls `onChange` for every alias now (initial state) and for every later change, until `signal` aborts. */
  async watch(onChange: (change: AliasChange) => void | Promise<void>, signal: AbortSignal): Promise<void> {
    const iter = await this.aliases.watch({ key: '>' })
    signal.addEventListener('abort', () => iter.stop(), { once: true })
    for await (const e of iter) {
      const parsed = parseAliasKey(e.key)
      if (!parsed) continue
      await onChange({
        ...parsed,
        version: e.operation === 'PUT' ? Number(e.string()) : undefined,
        revision: e.revision,
      })
    }
  }
}
