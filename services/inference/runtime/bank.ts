// The models of one feature list, their parameters stacked for the bank graph (model/onnx.ts): a
// batch whose readings belong to many of them is scored in one run. The run itself is given (a
// scoring thread runs it on its bank session with `bankFeeds`).
import * as ort from 'onnxruntime-node'
import { BANK, type BankParameter, type BankParameters, GRAPH } from '../model/onnx.js'
import type { ScoreOutputs } from '../model/spec.js'

/** Runs the bank graph: `values` rows × F, `slots` each row's model index. */
export type BankRun = (
  bank: ModelBank,
  values: Float64Array,
  slots: BigInt64Array,
  rows: number,
) => Promise<ScoreOutputs>

export class ModelBank {
  /** Models held; slots of removed models are reused. */
  private readonly slots = new Map<string, number>()
  private readonly free: number[] = []
  private capacity = 0
  /** Components of the widest model (narrower ones are padded with zeros). */
  components = 1
  /** The stacked parameters, `capacity` models each, as the bank graph's `<name>_bank` inputs take them. */
  stacked = {} as Record<BankParameter, Float64Array>

  constructor(
    readonly features: number,
    readonly run: BankRun,
  ) {
    this.resize(8, 1)
  }

  /** Models the stacked tensors have room for (their first dimension). */
  get models(): number {
    return this.capacity
  }

  get size(): number {
    return this.slots.size
  }

  /** The shape of each stacked input. */
  dims(): Record<BankParameter, number[]> {
    const [m, f, k] = [this.capacity, this.features, this.components]
    return {
      mean: [m, f],
      scale: [m, f],
      P: [m, f, k],
      inv_lambda: [m, k],
      inv_spe_limit: [m],
      inv_t2_limit: [m],
      inv_rbc_diag: [m, f],
    }
  }

  slotOf(key: string): number | undefined {
    return this.slots.get(key)
  }

  /** Puts a model's parameters in (replacing what `key` had). */
  add(key: string, p: BankParameters): void {
    if (p.features !== this.features) throw new Error(`the bank holds ${this.features}-feature models`)
    let slot = this.slots.get(key)
    if (slot === undefined) {
      slot = this.free.pop() ?? this.slots.size
      if (slot >= this.capacity || p.components > this.components)
        this.resize(slot >= this.capacity ? this.capacity * 2 : this.capacity, p.components)
      this.slots.set(key, slot)
    } else if (p.components > this.components) this.resize(this.capacity, p.components)
    this.write(slot, p)
  }

  remove(key: string): void {
    const slot = this.slots.get(key)
    if (slot === undefined) return
    this.slots.delete(key)
    this.free.push(slot)
  }

  private write(slot: number, p: BankParameters): void {
    const f = this.features
    const k = this.components
    const s = this.stacked
    s.mean.set(p.mean, slot * f)
    s.scale.set(p.scale, slot * f)
    s.inv_rbc_diag.set(p.inv_rbc_diag, slot * f)
    s.inv_spe_limit[slot] = p.inv_spe_limit[0] as number
    s.inv_t2_limit[slot] = p.inv_t2_limit[0] as number
    // Components past the model's own are zero: they add exact zeros to every product.
    s.P.fill(0, slot * f * k, (slot + 1) * f * k)
    s.inv_lambda.fill(0, slot * k, (slot + 1) * k)
    for (let j = 0; j < f; j++)
      for (let c = 0; c < p.components; c++)
        s.P[slot * f * k + j * k + c] = p.P[j * p.components + c] as number
    s.inv_lambda.set(p.inv_lambda, slot * k)
  }

  /** New stacked arrays with room for `capacity` models of `components` components, contents kept. */
  private resize(capacity: number, components: number): void {
    const f = this.features
    const k = Math.max(this.components, components)
    const old = this.stacked
    const oldK = this.components
    const sizes: Record<BankParameter, number> = {
      mean: f,
      scale: f,
      P: f * k,
      inv_lambda: k,
      inv_spe_limit: 1,
      inv_t2_limit: 1,
      inv_rbc_diag: f,
    }
    const fresh = {} as Record<BankParameter, Float64Array>
    for (const name of BANK.parameters) fresh[name] = new Float64Array(capacity * sizes[name])
    // A padded scale of 1 keeps unused slots finite (no row points at them).
    fresh.scale.fill(1)
    for (let slot = 0; slot < this.capacity; slot++) {
      for (const name of ['mean', 'scale', 'inv_rbc_diag'] as const)
        fresh[name].set(old[name].subarray(slot * f, (slot + 1) * f), slot * f)
      fresh.inv_spe_limit[slot] = old.inv_spe_limit[slot] as number
      fresh.inv_t2_limit[slot] = old.inv_t2_limit[slot] as number
      for (let c = 0; c < oldK; c++) {
        fresh.inv_lambda[slot * k + c] = old.inv_lambda[slot * oldK + c] as number
        for (let j = 0; j < f; j++)
          fresh.P[slot * f * k + j * k + c] = old.P[slot * f * oldK + j * oldK + c] as number
      }
    }
    this.stacked = fresh
    this.capacity = capacity
    this.components = k
  }
}

/** The bank graph's inputs for `rows` rows of `values`, row i scored by the model in slot `slots[i]`. */
export function bankFeeds(
  bank: ModelBank,
  values: Float64Array,
  slots: BigInt64Array,
  rows: number,
): Record<string, ort.Tensor> {
  const dims = bank.dims()
  const feeds: Record<string, ort.Tensor> = {
    [GRAPH.input]: new ort.Tensor('float64', values, [rows, bank.features]),
    [BANK.model]: new ort.Tensor('int64', slots, [rows]),
  }
  for (const name of BANK.parameters)
    feeds[`${name}_bank`] = new ort.Tensor('float64', bank.stacked[name], dims[name])
  return feeds
}
