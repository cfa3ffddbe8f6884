// Runs the load generator on its own thread, so it does not share a core's time with the code that
// measures (the subscriber of the ceiling run, the observer of the bridge run).
import { parentPort, workerData } from 'node:worker_threads'
import { runFleet } from './mqtt-load.js'

const opts = workerData as {
  port: number
  devices: number
  total: number
  connections: number
  prefix: string
  topicPrefix: string
  ratePerSec?: number
}
const result = await runFleet({ ...opts, topic: (id) => `${opts.topicPrefix}/${id}/telemetry` })
parentPort?.postMessage(result)
