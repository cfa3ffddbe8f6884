// `npm run bench [-- <suite>] [--readings N] [--devices N] [--connections N] [--rounds N]`
// Suites: ingest (default), store (`--rows N --devices N`), inference (`--seconds N --readings N`),
// dashboard (`--devices N --points N`), e2e (`--seconds N --max-devices N --connections N`). Each prints a table of figures measured against the bare
// infrastructure in the same run.
import { benchDashboard } from './dashboard.js'
import { benchEndToEnd } from './e2e.js'
import { benchInference } from './inference.js'
import { benchIngest } from './ingest.js'
import { benchStore } from './store.js'

function flag(args: string[], name: string, fallback: number): number {
  const i = args.indexOf(`--${name}`)
  if (i === -1) return fallback
  const value = Number(args[i + 1])
  if (!Number.isInteger(value) || value <= 0) throw new Error(`--${name} wants a positive whole number`)
  return value
}

const args = process.argv.slice(2)
const suite = args.find((a) => !a.startsWith('--') && !/^\d+$/.test(a)) ?? 'ingest'
switch (suite) {
  case 'ingest':
    await benchIngest({
      readings: flag(args, 'readings', 300_000),
      devices: flag(args, 'devices', 1_000),
      connections: flag(args, 'connections', 4),
      rounds: flag(args, 'rounds', 3),
    })
    break
  case 'store':
    await benchStore({ rows: flag(args, 'rows', 10_000_000), devices: flag(args, 'devices', 10_000) })
    break
  case 'inference':
    await benchInference({ seconds: flag(args, 'seconds', 5), readings: flag(args, 'readings', 1_000_000) })
    break
  case 'dashboard':
    await benchDashboard({ devices: flag(args, 'devices', 5_000), points: flag(args, 'points', 100_000) })
    break
  case 'e2e':
    await benchEndToEnd({
      seconds: flag(args, 'seconds', 10),
      maxDevices: flag(args, 'max-devices', 100_000),
      connections: flag(args, 'connections', 4),
    })
    break
  default:
    process.stderr.write(`unknown benchmark "${suite}"; suites: ingest, store, inference, dashboard, e2e\n`)
    process.exitCode = 2
}
