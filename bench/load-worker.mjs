// Worker threads of Node 20 do not inherit tsx's loader: register it, then run the TypeScript.
import { register } from 'tsx/esm/api'

register()
await import('./load-worker.ts')
