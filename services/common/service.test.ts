import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { EchoService } from '../../gen/vigil/kit/v1/kit_pb.js'
import { freePort } from '../../test/fixtures/ports.js'
import { startChild } from '../../test/fixtures/process.js'

const entry = fileURLToPath(new URL('../../test/fixtures/echo-server.ts', import.meta.url))

/** Runs the kit's echo server as its own process, as `vigil up` runs every service. */
function spawnServer(env: Record<string, string>) {
  return startChild(process.execPath, ['--import', 'tsx', entry], { env: { ...process.env, ...env } })
}

async function waitReady(url: string, alive: () => boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (!alive()) throw new Error('server exited before it was ready')
    const res = await fetch(`${url}/readyz`).catch(() => undefined)
    if (res?.status === 200) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error('server did not become ready')
}

describe('a service process', () => {
  it('refuses bad configuration with one message naming every bad variable', async () => {
    const child = spawnServer({
      VIGIL_PORT: 'eighty',
      VIGIL_LOG_LEVEL: 'loud',
      VIGIL_TLS_CERT: '/nonexistent.pem',
    })
    const code = await child.exited
    assert.equal(code, 78)
    const out = child.output()
    assert.match(out, /VIGIL_PORT: must be an integer from 0 to 65535, got "eighty"/)
    assert.match(
      out,
      /VIGIL_LOG_LEVEL: must be one of trace, debug, info, warn, error, fatal, silent, got "loud"/,
    )
    assert.match(out, /VIGIL_TLS_CERT: file "\/nonexistent.pem" does not exist/)
    assert.match(out, /VIGIL_TLS_KEY: is required when VIGIL_TLS_CERT is set/)
  })

  it('finishes an in-flight call on SIGTERM, refuses new work, then exits by itself', async () => {
    const port = await freePort()
    const url = `http://127.0.0.1:${port}`
    const child = spawnServer({ VIGIL_PORT: String(port), VIGIL_LOG_LEVEL: 'info' })
    try {
      await waitReady(url, child.alive)
      const client = createClient(EchoService, createConnectTransport({ baseUrl: url, httpVersion: '2' }))
      const inFlight = client.echo({ message: 'finish me', delayMs: 1_500 })
      // A live stream must not hold the shutdown up: it ends when the server drains.
      const stream = (async () => {
        const got: number[] = []
        for await (const m of client.echoStream({ message: 's', count: 1000, intervalMs: 100 }))
          got.push(m.index)
        return got
      })()
      await new Promise((r) => setTimeout(r, 300))
      child.proc.kill('SIGTERM')
      const answer = await inFlight
      assert.equal(answer.message, 'finish me')
      const streamed = await stream
      assert.ok(
        streamed.length > 0 && streamed.length < 1000,
        `stream ended early (${streamed.length} messages)`,
      )
      const code = await child.exited
      assert.equal(code, 0, child.output())
      assert.match(child.output(), /"msg":"shutting down"/)
      assert.match(child.output(), /"msg":"stopped"/)
      await assert.rejects(fetch(`${url}/healthz`))
    } finally {
      await child.stop()
    }
  })
})
