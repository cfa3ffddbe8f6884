import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { describe, it } from 'node:test'
import { mosquittoConfig } from '../services/common/mosquitto.js'

const LIMITS = [
  'max_inflight_messages',
  'max_queued_messages',
  'max_queued_bytes',
  'max_packet_size',
  'persistence',
]

function settings(text: string): Map<string, string> {
  const out = new Map<string, string>()
  for (const line of text.split('\n')) {
    const m = /^(\w+)\s+(.+)$/.exec(line.trim())
    if (m) out.set(m[1]!, m[2]!)
  }
  return out
}

describe('deploy/mosquitto', () => {
  it('sets the same no-loss queue limits as the config vigil up and the tests generate', () => {
    const deployed = settings(
      readFileSync(new URL('../deploy/mosquitto/mosquitto.conf', import.meta.url), 'utf8'),
    )
    const generated = settings(mosquittoConfig({ port: 1883, dataDir: '/tmp/x' }))
    for (const key of LIMITS) assert.equal(deployed.get(key), generated.get(key), key)
    assert.ok(Number(deployed.get('max_queued_messages')) >= 1_000_000)
  })

  it('refuses anonymous access and uses dynamic security, as the generated secure config does', () => {
    const deployed = settings(
      readFileSync(new URL('../deploy/mosquitto/mosquitto.conf', import.meta.url), 'utf8'),
    )
    const generated = settings(
      mosquittoConfig({
        port: 1883,
        dataDir: '/tmp/x',
        dynsec: { pluginPath: '/p.so', configFile: '/c.json' },
      }),
    )
    for (const key of ['allow_anonymous', 'per_listener_settings'])
      assert.equal(deployed.get(key), generated.get(key), key)
    assert.equal(deployed.get('allow_anonymous'), 'false')
    assert.match(deployed.get('plugin') ?? '', /mosquitto_dynamic_security\.so$/)
    assert.ok(deployed.get('plugin_opt_config_file'))
    assert.ok(generated.get('plugin_opt_config_file'))
  })
})
