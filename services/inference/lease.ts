// A lease on a key of the model-aliases bucket: one inference process does a piece of work (train
// the bootstrap models) while it holds the lease; it renews it while alive, and another process
// takes it over once it went stale (its holder died).
import type { KV } from '@nats-io/kv'

export class Lease {
  private renewer: NodeJS.Timeout | undefined
  private revision = 0

  constructor(
    private readonly kv: KV,
    private readonly key: string,
    private readonly owner: string,
    /** A lease not renewed for this long is taken over. */
    private readonly staleMs = 20_000,
  ) {}

  /** Takes the lease when free or stale; renews it every staleMs/4 until `release()`. */
  async acquire(): Promise<boolean> {
    const value = () => JSON.stringify({ owner: this.owner, at: Date.now() })
    try {
      this.revision = await this.kv.create(this.key, value())
    } catch {
      const entry = await this.kv.get(this.key).catch(() => null)
      if (!entry) return false
      const held = entry.operation === 'PUT' ? (entry.json() as { at: number }) : { at: 0 }
      if (entry.operation === 'PUT' && Date.now() - held.at < this.staleMs) return false
      try {
        this.revision = await this.kv.update(this.key, value(), entry.revision)
      } catch {
        return false // another process took it first
      }
    }
    this.renewer = setInterval(() => {
      this.kv.update(this.key, value(), this.revision).then(
        (revision) => {
          this.revision = revision
        },
        () => undefined, // lost to a takeover (this process stalled): the work is idempotent
      )
    }, this.staleMs / 4)
    this.renewer.unref()
    return true
  }

  async release(): Promise<void> {
    clearInterval(this.renewer)
    this.renewer = undefined
    await this.kv.delete(this.key).catch(() => undefined)
  }
}
