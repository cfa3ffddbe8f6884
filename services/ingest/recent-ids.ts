/**
 * Event ids stored recently, oldest forgotten first: lets ingest tell a client that a reading it
 * sent again was already stored. Bounded by `capacity`; a miss is never wrong, only less helpful,
 * because everything downstream de-duplicates by event id anyway.
 */
export class RecentIds {
  private readonly ids = new Set<string>()

  constructor(private readonly capacity = 100_000) {}

  has(id: string): boolean {
    return this.ids.has(id)
  }

  add(id: string): void {
    this.ids.add(id)
    if (this.ids.size > this.capacity) {
      const oldest = this.ids.values().next().value
      if (oldest !== undefined) this.ids.delete(oldest)
    }
  }
}
