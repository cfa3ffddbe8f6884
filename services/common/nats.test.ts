import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { fromBinary } from '@bufbuild/protobuf'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { Objm } from '@nats-io/obj'
import { RejectedSchema, RejectReason } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { type NatsFixture, startNats } from '../../test/fixtures/nats.js'
import { freePort } from '../../test/fixtures/ports.js'
import { createLogger } from './log.js'
import {
  BUS,
  connectNats,
  ensureConsumer,
  type NatsConnection,
  NatsUnreachableError,
  PoisonMessageError,
  partitionOf,
  provisionBus,
  rawSubject,
  rejectedSubject,
  runConsumer,
} from './nats.js'

const log = createLogger({ service: 'store', logLevel: 'silent' })

describe('partitions', () => {
  it('spreads devices over partitions, the same device always on the same one', () => {
    const counts = new Array(16).fill(0)
    for (let i = 0; i < 16_000; i++) counts[partitionOf(`device-${i}`, 16)]++
    assert.ok(Math.min(...counts) > 800 && Math.max(...counts) < 1200, `uneven: ${counts}`)
    assert.equal(partitionOf('abc-123', 16), partitionOf('abc-123', 16))
    // FNV-1a (32 bit) is fixed so producers in other languages agree; 0x0e2d0ee6 is FNV-1a("abc-123").
    assert.equal(partitionOf('abc-123', 1 << 30), 0x0e2d0ee6 % (1 << 30))
  })
})

describe('nats helpers against a real nats-server', () => {
  let nats: NatsFixture
  let nc: NatsConnection

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'store', natsUrl: nats.url }, log)
  })
  after(async () => {
    await nc?.drain()
    await nats?.stop()
  })

  it('says clearly when nats-server is not there', async () => {
    const port = await freePort()
    const url = `nats://127.0.0.1:${port}`
    await assert.rejects(
      connectNats({ service: 'store', natsUrl: url }, log, { waitMs: 300 }),
      (err: unknown) => {
        assert.ok(err instanceof NatsUnreachableError)
        assert.match(err.message, new RegExp(`cannot reach nats-server at ${url}`))
        assert.match(err.message, /VIGIL_NATS_URL/)
        return true
      },
    )
  })

  it('provisions streams, KV buckets and the object store, idempotently', async () => {
    await provisionBus(nc, log)
    await provisionBus(nc, log, { maxAgeMs: 3600_000 })
    const jsm = await jetstreamManager(nc)
    const telemetry = await jsm.streams.info(BUS.streams.telemetry)
    assert.deepEqual(telemetry.config.subjects, ['telemetry.raw.>'])
    assert.equal(telemetry.config.max_age, 3600_000 * 1_000_000)
    assert.equal(telemetry.config.duplicate_window, 120_000 * 1_000_000)
    assert.deepEqual((await jsm.streams.info(BUS.streams.inferences)).config.subjects, [
      'telemetry.inferred.>',
    ])
    assert.deepEqual((await jsm.streams.info(BUS.streams.rejected)).config.subjects, ['telemetry.rejected.>'])
    assert.deepEqual((await jsm.streams.info(BUS.streams.commands)).config.subjects, ['commands.>'])
    const js = jetstream(nc)
    const kv = await new Kvm(js).open(BUS.kv.devices)
    assert.equal((await kv.status()).bucket, 'devices')
    const aliases = await new Kvm(js).open(BUS.kv.modelAliases)
    assert.equal((await aliases.status()).bucket, 'model-aliases')
    const models = await new Objm(js).open(BUS.objectStore.models)
    assert.equal((await models.status()).bucket, 'models')
  })

  it('stores a re-published batch once (msgID within the duplicate window)', async () => {
    await provisionBus(nc, log)
    const js = jetstream(nc)
    const first = await js.publish(rawSubject(3), new Uint8Array([1]), { msgID: 'batch-dup-1' })
    const again = await js.publish(rawSubject(3), new Uint8Array([1]), { msgID: 'batch-dup-1' })
    assert.equal(first.duplicate, false)
    assert.equal(again.duplicate, true)
    assert.equal(again.seq, first.seq)
  })

  it('consumes: acks after success, naks and retries a failure, terms and dead-letters poison', async () => {
    await provisionBus(nc, log)
    const js = jetstream(nc)
    const jsm = await jetstreamManager(nc)
    await jsm.streams.purge(BUS.streams.telemetry)
    await ensureConsumer(jsm, BUS.streams.telemetry, 'test-loop', { maxDeliver: 5 })
    await ensureConsumer(jsm, BUS.streams.telemetry, 'test-loop', { maxDeliver: 5 })
    const enc = new TextEncoder()
    for (const body of ['ok-1', 'flaky', 'poison', 'ok-2']) await js.publish(rawSubject(0), enc.encode(body))

    const handled: string[] = []
    const attempts = new Map<string, number>()
    const controller = new AbortController()
    const loop = runConsumer({
      js,
      stream: BUS.streams.telemetry,
      durable: 'test-loop',
      log,
      signal: controller.signal,
      concurrency: 2,
      backoffMs: 20,
      handle: async (msg) => {
        const body = new TextDecoder().decode(msg.data)
        attempts.set(body, (attempts.get(body) ?? 0) + 1)
        if (body === 'poison') throw new PoisonMessageError('not a ReadingBatch')
        if (body === 'flaky' && attempts.get(body) === 1) throw new Error('clickhouse is down')
        handled.push(body)
      },
    })
    const deadline = Date.now() + 10_000
    while (handled.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    controller.abort()
    await loop
    await nc.flush() // acks are fire-and-forget; the round trip makes the server see them

    assert.deepEqual(handled.sort(), ['flaky', 'ok-1', 'ok-2'])
    assert.equal(attempts.get('flaky'), 2)
    assert.equal(attempts.get('poison'), 1)
    const info = await jsm.consumers.info(BUS.streams.telemetry, 'test-loop')
    assert.equal(
      info.num_ack_pending,
      0,
      JSON.stringify({
        ack: info.num_ack_pending,
        pending: info.num_pending,
        redelivered: info.num_redelivered,
        delivered: info.delivered,
      }),
    )
    assert.equal(info.num_pending, 0)

    const dead = await jsm.streams.getMessage(BUS.streams.rejected, {
      last_by_subj: rejectedSubject(RejectReason.POISON),
    })
    assert.ok(dead)
    const rejected = fromBinary(RejectedSchema, dead.data)
    assert.equal(rejected.source, 'consumer:test-loop')
    assert.equal(rejected.reason, RejectReason.POISON)
    assert.equal(rejected.detail, 'not a ReadingBatch')
    assert.equal(new TextDecoder().decode(rejected.raw), 'poison')
  })
})
