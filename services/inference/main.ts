// vigil-inference: InferenceService (Infer, InferBatch, the model registry RPCs) and the
// asynchronous worker that scores every batch on telemetry.raw.> into telemetry.inferred.>.
import { hostname } from 'node:os'
import { connectBus } from '../common/bus.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { runService } from '../common/service.js'
import { readInferenceConfig } from './config.js'
import { startInference } from './start.js'

await runService({
  name: 'inference',
  defaultPort: DEFAULT_PORTS.inference,
  readConfig: readInferenceConfig,
  async start(kit) {
    const { nc } = await connectBus(kit)
    const ctx = await startInference(kit, nc, `${hostname()}/${process.pid}`)
    return { routes: ctx.routes }
  },
})
