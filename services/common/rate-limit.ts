/**
 * Token buckets per key (device id): `ratePerSec` tokens a second up to `burst`. One noisy device
 * empties only its own bucket. Buckets idle long enough to be full again are forgotten, which keeps
 * memory bounded by the number of recently active devices.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>()
  private lastSweep = Date.now()

  constructor(
    private readonly ratePerSec: number,
    private readonly burst: number,
  ) {}

  /** Takes one token for `key`; false when its bucket is empty. */
  take(key: string, now = Date.now()): boolean {
    if (this.ratePerSec <= 0) return true
    let bucket = this.buckets.get(key)
    if (!bucket) {
      bucket = { tokens: this.burst, at: now }
      this.buckets.set(key, bucket)
    } else {
      bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.ratePerSec)
      bucket.at = now
    }
    if (now - this.lastSweep > 60_000) this.sweep(now)
    if (bucket.tokens < 1) return false
    bucket.tokens -= 1
    return true
  }

  get size(): number {
    return this.buckets.size
  }

  private sweep(now: number): void {
    this.lastSweep = now
    const fullAfterMs = (this.burst / this.ratePerSec) * 1000
    for (const [key, bucket] of this.buckets) if (now - bucket.at > fullAfterMs) this.buckets.delete(key)
  }
}
