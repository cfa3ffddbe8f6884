import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  Code,
  ConnectError,
  createClient,
  createRouterTransport,
  type Interceptor,
} from '@connectrpc/connect'
import { Registry } from 'prom-client'
import { EchoService } from '../../gen/vigil/kit/v1/kit_pb.js'
import { circuitBreaker, retryUnavailable } from './resilience.js'

/** An echo peer whose next answers are scripted: a code to fail with, or 'ok'. */
function peer(script: (Code | 'ok')[], interceptors: Interceptor[]) {
  const calls = { n: 0 }
  const transport = createRouterTransport(
    ({ service }) =>
      service(EchoService, {
        echo(req) {
          calls.n++
          const next = script.shift() ?? 'ok'
          if (next !== 'ok') throw new ConnectError('scripted failure', next)
          return { message: req.message }
        },
        async *echoStream() {},
      }),
    { transport: { interceptors } },
  )
  return { client: createClient(EchoService, transport), calls }
}

describe('resilience: retries with jitter and a circuit breaker for calls to a peer that may be down', () => {
  it('retries a call answered Unavailable once, and never one the peer refused as wrong', async () => {
    const flaky = peer([Code.Unavailable, 'ok'], [retryUnavailable({ attempts: 2, baseMs: 1 })])
    assert.equal((await flaky.client.echo({ message: 'hi' })).message, 'hi')
    assert.equal(flaky.calls.n, 2)
    const wrong = peer([Code.InvalidArgument], [retryUnavailable({ attempts: 3, baseMs: 1 })])
    await assert.rejects(
      wrong.client.echo({ message: 'x' }),
      (e: ConnectError) => e.code === Code.InvalidArgument,
    )
    assert.equal(wrong.calls.n, 1)
    const down = peer(
      [Code.Unavailable, Code.Unavailable, Code.Unavailable],
      [retryUnavailable({ attempts: 2, baseMs: 1 })],
    )
    await assert.rejects(down.client.echo({ message: 'x' }), (e: ConnectError) => e.code === Code.Unavailable)
    assert.equal(down.calls.n, 2, 'gives up after its attempts')
  })

  it('opens after repeated peer failures, answers at once while open, then closes after a successful trial', async () => {
    const registry = new Registry()
    const failing = Array.from({ length: 3 }, () => Code.Unavailable)
    const p = peer(
      [...failing, Code.DeadlineExceeded, 'ok'],
      [circuitBreaker({ target: 'peer', threshold: 3, openMs: 200, registry })],
    )
    for (let i = 0; i < 3; i++) await assert.rejects(p.client.echo({ message: 'x' }))
    assert.equal(p.calls.n, 3)
    await assert.rejects(p.client.echo({ message: 'x' }), (e: ConnectError) => {
      assert.equal(e.code, Code.Unavailable)
      assert.match(e.rawMessage, /peer failed 3 times in a row: not called .* \(circuit open\)/)
      return true
    })
    assert.equal(p.calls.n, 3, 'the open circuit did not call the peer')
    assert.match(await registry.metrics(), /vigil_circuit_open\{target="peer"\} 1/)
    assert.match(await registry.metrics(), /vigil_circuit_rejected_total\{target="peer"\} 1/)

    await new Promise((r) => setTimeout(r, 250))
    await assert.rejects(
      p.client.echo({ message: 'trial' }),
      (e: ConnectError) => e.code === Code.DeadlineExceeded,
    )
    assert.equal(p.calls.n, 4, 'one trial call after the open period')
    await assert.rejects(p.client.echo({ message: 'x' }), /circuit open/)
    assert.equal(p.calls.n, 4, 'a failed trial opens it again')

    await new Promise((r) => setTimeout(r, 250))
    assert.equal((await p.client.echo({ message: 'back' })).message, 'back')
    assert.equal((await p.client.echo({ message: 'again' })).message, 'again')
    assert.match(await registry.metrics(), /vigil_circuit_open\{target="peer"\} 0/)
  })

  it('does not count requests the peer refused as wrong', async () => {
    const p = peer(
      [Code.InvalidArgument, Code.InvalidArgument, Code.InvalidArgument, 'ok'],
      [circuitBreaker({ target: 'peer', threshold: 2, openMs: 10_000 })],
    )
    for (let i = 0; i < 3; i++) await assert.rejects(p.client.echo({ message: 'x' }), /scripted failure/)
    assert.equal((await p.client.echo({ message: 'fine' })).message, 'fine')
  })
})
