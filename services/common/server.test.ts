import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { after, before, describe, it } from 'node:test'
import { promisify } from 'node:util'
import { fromBinary } from '@bufbuild/protobuf'
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from '@connectrpc/connect-node'
import { EchoService } from '../../gen/vigil/kit/v1/kit_pb.js'
import { dynamicClient, grpc, PROTO, serverStream, unary } from '../../test/fixtures/grpc.js'
import { echoRoutes } from './echo.js'
import { invalidArgument, violationsOf } from './errors.js'
import { createLogger } from './log.js'
import { Metrics } from './metrics.js'
import { type RunningServer, startServer } from './server.js'

const run = promisify(execFile)
const log = createLogger({ service: 'cli', logLevel: 'silent' })
const config = {
  service: 'cli' as const,
  host: '127.0.0.1',
  port: 0,
  corsOrigins: ['*'],
  shutdownTimeoutMs: 5_000,
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const m of it) out.push(m)
  return out
}

describe('kit server: one port for Connect, gRPC and gRPC-Web', () => {
  let server: RunningServer
  let address: string

  before(async () => {
    server = await startServer({ config, log, metrics: new Metrics('cli'), routes: echoRoutes })
    server.health.markStarted()
    address = server.url.replace('http://', '')
  })
  after(() => server.close())

  it('answers Connect JSON from curl over HTTP/1.1 and HTTP/2, unary and server stream', async () => {
    const unaryArgs = [
      '-sS',
      '-X',
      'POST',
      '-H',
      'Content-Type: application/json',
      '-d',
      '{"message":"hello"}',
    ]
    const h1 = await run('curl', [...unaryArgs, `${server.url}/vigil.kit.v1.EchoService/Echo`])
    assert.deepEqual(JSON.parse(h1.stdout), { message: 'hello' })
    const h2 = await run('curl', [
      '--http2-prior-knowledge',
      ...unaryArgs,
      `${server.url}/vigil.kit.v1.EchoService/Echo`,
    ])
    assert.deepEqual(JSON.parse(h2.stdout), { message: 'hello' })

    // A Connect server stream: the request is one enveloped JSON message, the answer is enveloped
    // messages followed by an end-of-stream envelope (flag 2).
    const body = Buffer.from(JSON.stringify({ message: 'tick', count: 3 }))
    const envelope = Buffer.concat([Buffer.from([0]), Buffer.alloc(4), body])
    envelope.writeUInt32BE(body.length, 1)
    const { stdout } = await new Promise<{ stdout: Buffer }>((resolve, reject) => {
      const child = execFile(
        'curl',
        [
          '-sS',
          '-X',
          'POST',
          '-H',
          'Content-Type: application/connect+json',
          '--data-binary',
          '@-',
          `${server.url}/vigil.kit.v1.EchoService/EchoStream`,
        ],
        { encoding: 'buffer' },
        (err, out) => (err ? reject(err) : resolve({ stdout: out })),
      )
      child.stdin?.end(envelope)
    })
    const messages: { flags: number; json: unknown }[] = []
    for (let at = 0; at < stdout.length; ) {
      const flags = stdout[at]!
      const len = stdout.readUInt32BE(at + 1)
      messages.push({ flags, json: JSON.parse(stdout.subarray(at + 5, at + 5 + len).toString()) })
      at += 5 + len
    }
    assert.deepEqual(
      messages.map((m) => m.json),
      [{ message: 'tick' }, { message: 'tick', index: 1 }, { message: 'tick', index: 2 }, {}],
    )
    assert.equal(messages.at(-1)?.flags, 2)
  })

  it('answers connect-node over the Connect protocol on HTTP/1.1 and HTTP/2, JSON and binary', async () => {
    for (const httpVersion of ['1.1', '2'] as const) {
      for (const useBinaryFormat of [false, true]) {
        const client = createClient(
          EchoService,
          createConnectTransport({ baseUrl: server.url, httpVersion, useBinaryFormat }),
        )
        assert.equal((await client.echo({ message: `c${httpVersion}` })).message, `c${httpVersion}`)
        const stream = await collect(client.echoStream({ message: 's', count: 2 }))
        assert.deepEqual(
          stream.map((m) => m.index),
          [0, 1],
        )
      }
    }
  })

  it('answers gRPC from grpc-js with a client built from the .proto at run time', async () => {
    const client = dynamicClient(PROTO.kit, 'vigil.kit.v1.EchoService', address)
    try {
      const res = await unary<{ message: string }>(client, 'echo', { message: 'grpc' })
      assert.equal(res.message, 'grpc')
      const stream = await serverStream<{ message: string; index: number }>(client, 'echoStream', {
        message: 'g',
        count: 3,
      })
      assert.deepEqual(
        stream.map((m) => m.index),
        [0, 1, 2],
      )
    } finally {
      client.close()
    }
  })

  it('answers gRPC and gRPC-Web from connect-node', async () => {
    const grpcClient = createClient(EchoService, createGrpcTransport({ baseUrl: server.url }))
    assert.equal((await grpcClient.echo({ message: 'g' })).message, 'g')
    const web = createClient(EchoService, createGrpcWebTransport({ baseUrl: server.url, httpVersion: '1.1' }))
    assert.equal((await web.echo({ message: 'web' })).message, 'web')
    const stream = await collect(web.echoStream({ message: 'w', count: 4 }))
    assert.equal(stream.length, 4)
  })

  it('answers grpc.health.v1 Check and Watch', async () => {
    const client = dynamicClient(PROTO.health, 'grpc.health.v1.Health', address)
    try {
      assert.equal((await unary<{ status: string }>(client, 'check', { service: '' })).status, 'SERVING')
      const named = await unary<{ status: string }>(client, 'check', { service: 'vigil.kit.v1.EchoService' })
      assert.equal(named.status, 'SERVING')
      await assert.rejects(unary(client, 'check', { service: 'no.such.Service' }), {
        code: grpc.status.NOT_FOUND,
      })
      const first = await new Promise<{ status: string }>((resolve, reject) => {
        const call = client.watch!({ service: '' }) as grpc.ClientReadableStream<{ status: string }>
        call.once('data', (m) => {
          resolve(m)
          call.cancel()
        })
        call.once('error', (err: grpc.ServiceError) => {
          if (err.code !== grpc.status.CANCELLED) reject(err)
        })
      })
      assert.equal(first.status, 'SERVING')
    } finally {
      client.close()
    }
  })

  for (const [proto, service] of [
    [PROTO.reflection, 'grpc.reflection.v1.ServerReflection'],
    [PROTO.reflectionAlpha, 'grpc.reflection.v1alpha.ServerReflection'],
  ] as const) {
    it(`serves ${service} to a grpc-js client`, async () => {
      const client = dynamicClient(proto, service, address)
      try {
        const call = client.serverReflectionInfo!() as grpc.ClientDuplexStream<
          unknown,
          Record<string, unknown>
        >
        const answers: Record<string, unknown>[] = []
        const done = new Promise<void>((resolve, reject) => {
          call.on('data', (m) => answers.push(m))
          call.on('end', resolve)
          call.on('error', reject)
        })
        call.write({ listServices: '' })
        call.write({ fileContainingSymbol: 'vigil.kit.v1.EchoService' })
        call.write({ fileContainingSymbol: 'no.such.Symbol' })
        call.end()
        await done
        const list = answers[0]?.listServicesResponse as { service: { name: string }[] }
        assert.deepEqual(list.service.map((s) => s.name).sort(), [
          'grpc.health.v1.Health',
          'grpc.reflection.v1.ServerReflection',
          'grpc.reflection.v1alpha.ServerReflection',
          'vigil.kit.v1.EchoService',
        ])
        const files = (answers[1]!.fileDescriptorResponse as { fileDescriptorProto: Buffer[] })
          .fileDescriptorProto
        const decoded = files.map((b) => fromBinary(FileDescriptorProtoSchema, b))
        assert.equal(decoded[0]?.name, 'vigil/kit/v1/kit.proto')
        assert.deepEqual(
          decoded[0]?.service[0]?.method.map((m) => m.name),
          ['Echo', 'EchoStream'],
        )
        assert.equal((answers[2]!.errorResponse as { errorCode: number }).errorCode, grpc.status.NOT_FOUND)
      } finally {
        client.close()
      }
    })
  }

  it('lists its services to `buf curl --list-services`', async () => {
    const { stdout } = await run('buf', ['curl', '--list-services', '--http2-prior-knowledge', server.url])
    assert.deepEqual(stdout.trim().split('\n').sort(), [
      'grpc.health.v1.Health',
      'grpc.reflection.v1.ServerReflection',
      'grpc.reflection.v1alpha.ServerReflection',
      'vigil.kit.v1.EchoService',
    ])
  })

  it('serves /healthz, /readyz and /metrics with RPC counts by method and code', async () => {
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200)
    const ready = await fetch(`${server.url}/readyz`)
    assert.equal(ready.status, 200)
    assert.equal(((await ready.json()) as { ready: boolean }).ready, true)
    const client = createClient(
      EchoService,
      createConnectTransport({ baseUrl: server.url, httpVersion: '1.1' }),
    )
    await assert.rejects(collect(client.echoStream({ message: 'x', count: 0 })), {
      code: Code.InvalidArgument,
    })
    const metrics = await (await fetch(`${server.url}/metrics`)).text()
    assert.match(
      metrics,
      /vigil_rpc_server_handled_total\{service="vigil\.kit\.v1\.EchoService",method="Echo",code="ok"\} \d+/,
    )
    assert.match(metrics, /method="EchoStream",code="invalid_argument"/)
    assert.match(metrics, /vigil_rpc_server_handling_seconds_bucket/)
    assert.match(metrics, /vigil_process_resident_memory_bytes/)
  })

  it('answers CORS preflights for browsers', async () => {
    const res = await fetch(`${server.url}/vigil.kit.v1.EchoService/Echo`, {
      method: 'OPTIONS',
      headers: {
        Origin: 'http://localhost:5173',
        'Access-Control-Request-Method': 'POST',
        'Access-Control-Request-Headers': 'content-type,connect-protocol-version',
      },
    })
    assert.equal(res.status, 204)
    assert.equal(res.headers.get('access-control-allow-origin'), '*')
    assert.match(res.headers.get('access-control-allow-headers') ?? '', /Connect-Protocol-Version/i)
    assert.match(res.headers.get('access-control-allow-methods') ?? '', /POST/)
  })

  it('reports NOT_SERVING on /readyz while a dependency check fails', async () => {
    let natsUp = false
    server.health.addCheck({ name: 'nats', ok: () => natsUp })
    const down = await fetch(`${server.url}/readyz`)
    assert.equal(down.status, 503)
    assert.deepEqual(((await down.json()) as { checks: Record<string, boolean> }).checks, { nats: false })
    natsUp = true
    assert.equal((await fetch(`${server.url}/readyz`)).status, 200)
  })
})

describe('kit server: errors', () => {
  let server: RunningServer
  before(async () => {
    server = await startServer({
      config,
      log,
      metrics: new Metrics('cli'),
      routes: (router) =>
        router.service(EchoService, {
          echo(req) {
            if (req.message === 'secret') throw new Error('database password is hunter2')
            if (req.message === 'invalid') {
              throw invalidArgument('echo', [{ field: 'message', description: 'must not be "invalid"' }])
            }
            throw new ConnectError('nope', Code.FailedPrecondition)
          },
          async *echoStream() {
            yield { message: 'one', index: 0 }
            throw new Error('stream broke: token abc')
          },
        }),
    })
  })
  after(() => server.close())

  it('turns an unexpected error into Internal with an incident id, never the cause', async () => {
    const client = createClient(
      EchoService,
      createConnectTransport({ baseUrl: server.url, httpVersion: '2' }),
    )
    const err = await client.echo({ message: 'secret' }).catch((e: unknown) => ConnectError.from(e))
    assert.ok(err instanceof ConnectError)
    assert.equal(err.code, Code.Internal)
    assert.match(err.rawMessage, /^internal error \(incident [0-9a-f-]{36}\)$/)
    assert.doesNotMatch(err.rawMessage, /hunter2/)
    const kept = await client.echo({ message: 'other' }).catch((e: unknown) => ConnectError.from(e))
    assert.ok(kept instanceof ConnectError)
    assert.equal(kept.code, Code.FailedPrecondition)
    assert.equal(kept.rawMessage, 'nope')
  })

  it('sends field violations as google.rpc.BadRequest to Connect and gRPC clients', async () => {
    for (const transport of [
      createConnectTransport({ baseUrl: server.url, httpVersion: '1.1' }),
      createGrpcTransport({ baseUrl: server.url }),
      createGrpcWebTransport({ baseUrl: server.url, httpVersion: '1.1' }),
    ]) {
      const err = await createClient(EchoService, transport)
        .echo({ message: 'invalid' })
        .catch((e: unknown) => ConnectError.from(e))
      assert.ok(err instanceof ConnectError)
      assert.equal(err.code, Code.InvalidArgument)
      assert.deepEqual(violationsOf(err), [{ field: 'message', description: 'must not be "invalid"' }])
    }
    // grpc-js sees the standard trailer with the encoded google.rpc.Status.
    const client = dynamicClient(PROTO.kit, 'vigil.kit.v1.EchoService', server.url.replace('http://', ''))
    try {
      const err = await unary(client, 'echo', { message: 'invalid' }).catch((e: grpc.ServiceError) => e)
      assert.equal((err as grpc.ServiceError).code, grpc.status.INVALID_ARGUMENT)
      assert.ok((err as grpc.ServiceError).metadata.get('grpc-status-details-bin').length === 1)
    } finally {
      client.close()
    }
  })

  it('does the same for a failing stream after its first message', async () => {
    const client = createClient(EchoService, createGrpcTransport({ baseUrl: server.url }))
    const seen: string[] = []
    const err = await (async () => {
      for await (const m of client.echoStream({ count: 2 })) seen.push(m.message)
    })().catch((e: unknown) => ConnectError.from(e))
    assert.deepEqual(seen, ['one'])
    assert.ok(err instanceof ConnectError)
    assert.equal(err.code, Code.Internal)
    assert.doesNotMatch(err.rawMessage, /abc/)
  })
})
