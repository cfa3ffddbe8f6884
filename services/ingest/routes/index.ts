import type { ConnectRouter } from '@connectrpc/connect'
import { IngestService } from '../../../gen/vigil/ingest/v1/ingest_pb.js'
import type { IngestContext } from '../context.js'
import { publish } from './publish.js'
import { publishBatch } from './publish-batch.js'
import { publishStream } from './publish-stream.js'

/** vigil.ingest.v1.IngestService. */
export function ingestRoutes(ctx: IngestContext) {
  return (router: ConnectRouter) =>
    router.service(IngestService, {
      publish: (req) => publish(ctx, req),
      publishBatch: (req) => publishBatch(ctx, req),
      publishStream: (requests) => publishStream(ctx, requests),
    })
}
