// Under tsx (tests, `npm run vigil`) worker threads do not inherit its loader: register it, then
// run the TypeScript worker. Built code (dist/) starts ort-worker.js directly.
import { register } from 'tsx/esm/api'

register()
await import('./ort-worker.ts')
