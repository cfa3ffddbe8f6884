// `vigil broker init-dynsec FILE`: the first file of mosquitto's dynamic-security plugin, with the
// bridge's account (its password made here and printed once).

import { randomBytes } from 'node:crypto'
import { existsSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { initialDynsecConfig } from '../common/dynsec.js'

export const BROKER_HELP = `vigil broker — the MQTT broker's set-up

Usage:
  vigil broker init-dynsec FILE [--username vigil-bridge] [--force]
      writes the first configuration of mosquitto's dynamic-security plugin: nothing allowed by
      default, one account for the Vigil bridge (its password is printed once; give it to the
      bridge as VIGIL_MQTT_PASSWORD). Devices are added by the bridge as they are registered.
`

export async function broker(argv: string[]): Promise<number> {
  const { values: flags, positionals } = parseArgs({
    args: argv,
    options: {
      username: { type: 'string' },
      force: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  })
  const [sub, file] = positionals
  if (flags.help || sub !== 'init-dynsec' || !file) {
    process.stdout.write(BROKER_HELP)
    return flags.help ? 0 : 2
  }
  if (existsSync(file) && !flags.force) {
    process.stderr.write(
      `vigil broker: ${file} exists; it holds the broker's accounts. Use --force to replace it.\n`,
    )
    return 1
  }
  const username = flags.username ?? 'vigil-bridge'
  const password = randomBytes(24).toString('base64url')
  writeFileSync(file, initialDynsecConfig({ username, password }), { mode: 0o600 })
  process.stdout.write(
    `wrote ${file}\n  bridge username: ${username}\n  bridge password: ${password}\n` +
      'Give these to the bridge (VIGIL_MQTT_USERNAME, VIGIL_MQTT_PASSWORD) with VIGIL_MQTT_DYNSEC=true; the password is not kept.\n',
  )
  return 0
}
