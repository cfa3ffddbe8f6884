// A Watch stream that reconnects with backoff and says how it is doing.
import type { MessageInitShape } from '@bufbuild/protobuf'
import type { WatchRequestSchema, WatchResponse } from '../../../gen/vigil/query/v1/query_pb.js'
import { query } from './api.js'

export type LiveState = 'connecting' | 'live' | 'reconnecting'

export function watchLive(
  req: MessageInitShape<typeof WatchRequestSchema>,
  onEvent: (e: WatchResponse) => void,
  onState: (s: LiveState, detail?: string) => void,
): () => void {
  const stop = new AbortController()
  void (async () => {
    let delay = 500
    onState('connecting')
    while (!stop.signal.aborted) {
      try {
        for await (const e of query.watch(req, { signal: stop.signal })) {
          onState('live')
          delay = 500
          onEvent(e)
        }
      } catch (err) {
        if (stop.signal.aborted) return
        onState('reconnecting', (err as Error).message)
      }
      await new Promise((r) => setTimeout(r, delay))
      delay = Math.min(delay * 2, 10_000)
    }
  })()
  return () => stop.abort()
}
