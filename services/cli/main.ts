#!/usr/bin/env node
import { ConfigError } from '../common/config.js'
import { up } from './up.js'

const HELP = `vigil — IoT telemetry and anomaly detection

Usage: vigil <command> [options]

Commands:
  up [--simulate N | --no-simulate]   run the whole stack on this machine until Ctrl-C
  help                                this text

Environment: see README.md ("Configuration") for every VIGIL_* variable.
`

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'up':
      return up(rest)
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(HELP)
      return 0
    default:
      process.stderr.write(`vigil: unknown command "${command}"\n\n${HELP}`)
      return 2
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code
  },
  (err: unknown) => {
    process.stderr.write(
      `vigil: ${err instanceof ConfigError ? err.message : ((err as Error).stack ?? err)}\n`,
    )
    process.exitCode = 1
  },
)
