#!/usr/bin/env node
import { ConfigError } from '../common/config.js'
import { broker } from './broker.js'
import { certs } from './certs.js'
import { devices } from './devices.js'
import { models } from './models.js'
import { simulate } from './simulate.js'
import { token } from './token.js'
import { train } from './train.js'
import { up } from './up.js'

const HELP = `vigil — IoT telemetry and anomaly detection

Usage: vigil <command> [options]

Commands:
  up [--simulate N | --no-simulate] [--port-offset N] [--no-auth] [--tls]
                                      run the whole stack on this machine until Ctrl-C
  train [options]                     fit an anomaly model from stored telemetry or a file
  models list|show|promote|rollback   the model registry
  devices add|list|show|update|revoke the device registry
  broker init-dynsec FILE             the broker's first dynamic-security file
  simulate [--devices N] [...]        a fleet of simulated devices over MQTT
  certs [--out DIR] [--device ID]...  a development CA and certificates for components and devices
  token [--role ROLE] [--ttl 1h]      an access token from the development issuer of "vigil up"
  help                                this text

"vigil <command> --help" tells more about one command.

Environment: see README.md ("Configuration") for every VIGIL_* variable.
`

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  switch (command) {
    case 'up':
      return up(rest)
    case 'train':
      return train(rest)
    case 'models':
      return models(rest)
    case 'devices':
      return devices(rest)
    case 'broker':
      return broker(rest)
    case 'simulate':
      return simulate(rest)
    case 'certs':
      return certs(rest)
    case 'token':
      return token(rest)
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
    if (String((err as { code?: string }).code ?? '').startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`vigil: ${(err as Error).message} (see "vigil help")\n`)
      process.exitCode = 2
      return
    }
    process.stderr.write(
      `vigil: ${err instanceof ConfigError ? err.message : ((err as Error).stack ?? err)}\n`,
    )
    process.exitCode = 1
  },
)
