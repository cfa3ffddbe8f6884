import { describeEndToEnd } from './fixtures/e2e.js'

describeEndToEnd('end to end: vigil up, 220 devices, 50,000 readings', { kill: false })
