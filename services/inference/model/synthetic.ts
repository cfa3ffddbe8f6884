// A synthetic fleet with the structure of real equipment telemetry: two hidden drivers (the load
// on the machine and the ambient conditions) move several sensors together, the others are
// independent, each device has its own baseline. Anomalies are injected with a label saying which
// feature was touched. Used by the model tests, the inference benchmark and the device simulator.

export const SENSORS = ['current', 'humidity', 'pressure', 'temperature', 'vibration', 'voltage'] as const
export type SensorName = (typeof SENSORS)[number]

export type AnomalyKind = 'spike' | 'drift' | 'broken_correlation' | 'correlated_shift'
export const ANOMALY_KINDS: AnomalyKind[] = ['spike', 'drift', 'broken_correlation', 'correlated_shift']

/** A seeded random source (mulberry32) with a normal draw (Box–Muller). */
export class Rng {
  private state: number
  private spare: number | undefined
  constructor(seed: number) {
    this.state = seed >>> 0
  }
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  normal(): number {
    if (this.spare !== undefined) {
      const s = this.spare
      this.spare = undefined
      return s
    }
    const u = Math.max(this.next(), 1e-12)
    const v = this.next()
    const r = Math.sqrt(-2 * Math.log(u))
    this.spare = r * Math.sin(2 * Math.PI * v)
    return r * Math.cos(2 * Math.PI * v)
  }
  between(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next()
  }
  sign(): number {
    return this.next() < 0.5 ? -1 : 1
  }
  pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.next() * items.length)] as T
  }
}

interface SensorModel {
  mean: number
  sd: number
  load: number
  ambient: number
  noise: number
}

// Each sensor: mean + sd · (load·L + ambient·A + noise·ε), L, A, ε standard normal.
const MODEL: Record<SensorName, SensorModel> = {
  current: { mean: 12, sd: 2, load: 0.95, ambient: 0, noise: 0.15 },
  humidity: { mean: 45, sd: 6, load: 0, ambient: -0.9, noise: 0.25 },
  pressure: { mean: 1013, sd: 3, load: 0, ambient: 0, noise: 1 },
  temperature: { mean: 38, sd: 4, load: 0.7, ambient: 0.6, noise: 0.15 },
  vibration: { mean: 0.6, sd: 0.12, load: 0.9, ambient: 0, noise: 0.2 },
  voltage: { mean: 230, sd: 1.5, load: 0, ambient: 0, noise: 1 },
}

/** Sensors that follow the load: where a broken correlation or a correlated shift shows. */
const LOAD_SENSORS: SensorName[] = ['current', 'temperature', 'vibration']

export interface SyntheticDevice {
  id: string
  site: string
  /** Per-sensor baseline offsets in standard deviations (devices differ). */
  offset: Record<SensorName, number>
}

export function syntheticFleet(count: number, seed = 1, sites = 4): SyntheticDevice[] {
  const rng = new Rng(seed)
  return Array.from({ length: count }, (_, i) => ({
    id: `dev-${String(i + 1).padStart(4, '0')}`,
    site: `site-${(i % sites) + 1}`,
    offset: Object.fromEntries(SENSORS.map((s) => [s, rng.between(-1, 1)])) as Record<SensorName, number>,
  }))
}

export interface SyntheticRow {
  sensors: Record<SensorName, number>
  /** Set on injected rows: what was done, and to which feature (the load driver for a correlated shift). */
  anomaly?: { kind: AnomalyKind; feature: SensorName | 'load' }
  /** A drift's early rows: not yet clearly anomalous, left out of recall and false-positive counts. */
  ambiguous?: boolean
}

function compose(
  device: SyntheticDevice,
  load: number,
  ambient: number,
  rng: Rng,
): Record<SensorName, number> {
  const out = {} as Record<SensorName, number>
  for (const s of SENSORS) {
    const m = MODEL[s]
    out[s] = m.mean + m.sd * (device.offset[s] + m.load * load + m.ambient * ambient + m.noise * rng.normal())
  }
  return out
}

/** One normal reading of a device. */
export function normalReading(device: SyntheticDevice, rng: Rng): Record<SensorName, number> {
  return compose(device, rng.normal(), rng.normal(), rng)
}

/** One reading with an anomaly of the given kind. */
export function anomalousReading(
  device: SyntheticDevice,
  kind: AnomalyKind,
  rng: Rng,
  strength = 1,
): SyntheticRow {
  if (kind === 'correlated_shift') {
    // The load far outside its normal range: every load sensor moves, consistently with the others.
    const sensors = compose(device, rng.sign() * rng.between(6, 8) * strength, rng.normal(), rng)
    return { sensors, anomaly: { kind, feature: 'load' } }
  }
  if (kind === 'broken_correlation') {
    // One load sensor goes the opposite way of the others, each value alone in its normal range.
    const load = rng.sign() * rng.between(1.5, 2.5)
    const sensors = compose(device, load, rng.normal(), rng)
    const feature = rng.pick(LOAD_SENSORS)
    const m = MODEL[feature]
    sensors[feature] -= 2 * m.sd * m.load * load * strength
    return { sensors, anomaly: { kind, feature } }
  }
  const sensors = normalReading(device, rng)
  const feature = rng.pick(SENSORS)
  const size = kind === 'spike' ? rng.between(6, 10) : rng.between(4, 7)
  sensors[feature] += rng.sign() * size * MODEL[feature].sd * strength
  return { sensors, anomaly: { kind, feature } }
}

/**
 * A device's stream of rows: normal ones with anomalies injected at `rate` (kinds in turn). A drift
 * ramps over several rows; its rows below 4σ are marked ambiguous, the rest labelled.
 */
export function syntheticStream(
  device: SyntheticDevice,
  rows: number,
  rate: number,
  rng: Rng,
): SyntheticRow[] {
  const out: SyntheticRow[] = []
  let kindIndex = Math.floor(rng.next() * ANOMALY_KINDS.length)
  while (out.length < rows) {
    if (rng.next() >= rate) {
      out.push({ sensors: normalReading(device, rng) })
      continue
    }
    const kind = ANOMALY_KINDS[kindIndex++ % ANOMALY_KINDS.length] as AnomalyKind
    if (kind !== 'drift') {
      out.push(anomalousReading(device, kind, rng))
      continue
    }
    const feature = rng.pick(SENSORS)
    const sign = rng.sign()
    const steps = 10
    const top = rng.between(6, 8)
    for (let i = 1; i <= steps && out.length < rows; i++) {
      const sigma = (top * i) / steps
      const sensors = normalReading(device, rng)
      sensors[feature] += sign * sigma * MODEL[feature].sd
      out.push(sigma >= 4 ? { sensors, anomaly: { kind, feature } } : { sensors, ambiguous: true })
    }
  }
  return out
}
