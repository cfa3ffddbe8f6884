import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { describe, it } from 'node:test'
import { promisify } from 'node:util'
import { startMosquitto } from './fixtures/mosquitto.js'

const run = promisify(execFile)

describe('test fixtures', () => {
  it('start a real mosquitto that carries a QoS1 message, and stop it', async () => {
    const broker = await startMosquitto()
    try {
      const port = String(broker.port)
      const sub = run('mosquitto_sub', [
        '-h',
        '127.0.0.1',
        '-p',
        port,
        '-t',
        'devices/+/telemetry',
        '-q',
        '1',
        '-C',
        '1',
        '-W',
        '10',
      ])
      await new Promise((r) => setTimeout(r, 300))
      await run('mosquitto_pub', [
        '-h',
        '127.0.0.1',
        '-p',
        port,
        '-t',
        'devices/abc-123/telemetry',
        '-q',
        '1',
        '-m',
        '{"deviceId":"abc-123"}',
      ])
      const { stdout } = await sub
      assert.equal(stdout.trim(), '{"deviceId":"abc-123"}')
    } finally {
      await broker.stop()
    }
    await assert.rejects(
      run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(broker.port), '-t', 'x', '-m', 'y']),
    )
  })
})
