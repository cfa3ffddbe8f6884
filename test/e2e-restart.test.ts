import { describeEndToEnd } from './fixtures/e2e.js'

describeEndToEnd('end to end with a bridge, an ingest, an inference and a query process killed mid-run', {
  kill: true,
})
