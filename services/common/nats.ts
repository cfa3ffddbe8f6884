import {
  AckPolicy,
  type ConsumerInfo,
  DeliverPolicy,
  DiscardPolicy,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
} from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { Objm } from '@nats-io/obj'
import { connect, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node'
import { Gauge, type Registry } from 'prom-client'
import { RejectReason } from '../../gen/vigil/telemetry/v1/telemetry_pb.js'
import type { CommonConfig } from './config.js'
import { sleep } from './health.js'
import type { Logger } from './log.js'
import { registeredOnce } from './metrics.js'
import { keepRejected } from './rejections.js'

export type { JetStreamClient, JetStreamManager, JsMsg, MsgHdrs, NatsConnection }

const NANOS_PER_MS = 1_000_000
const nanos = (ms: number) => ms * NANOS_PER_MS

/** Names of everything Vigil keeps on the bus, in one place (see ARCHITECTURE.md, Bus). */
export const BUS = {
  streams: {
    telemetry: 'TELEMETRY',
    inferences: 'INFERENCES',
    rejected: 'REJECTED',
    commands: 'COMMANDS',
  },
  kv: { devices: 'devices', modelAliases: 'model-aliases', commands: 'commands' },
  objectStore: { models: 'models' },
} as const

/** `telemetry.raw.<partition>`: batches of readings as devices and programs sent them. */
export const rawSubject = (partition: number) => `telemetry.raw.${partition}`
/** `telemetry.inferred.<partition>`: batches of inferences. */
export const inferredSubject = (partition: number) => `telemetry.inferred.${partition}`
/** `telemetry.rejected.<reason>`: dead letters, one `Rejected` each. */
export const rejectedSubject = (reason: RejectReason) => `telemetry.rejected.${rejectReasonToken(reason)}`
/** `alerts.<deviceId>`: anomaly alerts. */
export const alertSubject = (deviceId: string) => `alerts.${deviceId}`
/** `device.provision`: broker credentials for a newly registered device (queue group of the bridges). */
export const PROVISION_SUBJECT = 'device.provision'
/** `device.cmd.<deviceId>`: command deliveries from the DeviceService to a bridge. */
export const commandSubject = (deviceId: string) => `device.cmd.${deviceId}`
/** `device.ack.<commandId>`: a device's answer to a command, relayed by the bridge that got it. */
export const commandAckSubject = (commandId: string) => `device.ack.${commandId}`

/** The subject token of a reject reason: `REJECT_REASON_BAD_JSON` → `bad_json`. */
export function rejectReasonToken(reason: RejectReason): string {
  return (RejectReason[reason] ?? 'UNSPECIFIED').replace(/^REJECT_REASON_/, '').toLowerCase()
}

/**
 * The partition of a device: FNV-1a of its id modulo the partition count. Stable across processes
 * and languages, so every producer puts one device's readings on one subject, in order.
 */
export function partitionOf(deviceId: string, partitions: number): number {
  let hash = 0x811c9dc5
  for (let i = 0; i < deviceId.length; i++) {
    hash ^= deviceId.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash % partitions
}

/** Raised when nats-server cannot be reached in time; says where it looked and how to fix it. */
export class NatsUnreachableError extends Error {
  constructor(url: string, cause: unknown) {
    super(
      `cannot reach nats-server at ${url} (${(cause as Error)?.message ?? cause}). ` +
        'Start one with "nats-server -js" or point VIGIL_NATS_URL at a running server.',
      { cause },
    )
    this.name = 'NatsUnreachableError'
  }
}

/**
 * Connects to NATS, retrying with backoff until `waitMs` passes or `signal` aborts. Once connected
 * the client reconnects forever by itself; status changes are logged.
 */
export async function connectNats(
  config: Pick<CommonConfig, 'service' | 'natsUrl' | 'natsUser' | 'natsPassword' | 'natsToken' | 'natsCa'>,
  log: Logger,
  opts: { signal?: AbortSignal; waitMs?: number } = {},
): Promise<NatsConnection> {
  const deadline = Date.now() + (opts.waitMs ?? 30_000)
  let delay = 100
  for (let attempt = 1; ; attempt++) {
    try {
      const nc = await connect({
        servers: config.natsUrl.split(',').map((s) => s.trim()),
        name: `vigil-${config.service}`,
        user: config.natsUser,
        pass: config.natsPassword,
        token: config.natsToken,
        // A private CA for a nats-server with TLS (tls:// URLs); else the system's.
        ...(config.natsCa ? { tls: { ca: config.natsCa.toString() } } : {}),
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        timeout: 5_000,
        // Every request (each JetStream publish waits for its ack) would otherwise make an Error up
        // front to carry the caller's stack into a later timeout: ~3% of the inference worker's
        // event loop in a profile. Our own logs say which operation failed.
        noAsyncTraces: true,
      })
      log.info({ server: nc.getServer(), attempt }, 'nats connected')
      void (async () => {
        for await (const s of nc.status()) {
          if (s.type === 'disconnect' || s.type === 'error')
            log.warn({ status: s.type }, 'nats connection trouble')
          else if (s.type === 'reconnect') log.info({ status: s.type }, 'nats reconnected')
        }
      })()
      return nc
    } catch (err) {
      if (opts.signal?.aborted || Date.now() + delay > deadline)
        throw new NatsUnreachableError(config.natsUrl, err)
      log.warn({ attempt, retryInMs: delay, err: (err as Error).message }, 'nats not reachable yet')
      await sleep(delay, opts.signal)
      delay = Math.min(delay * 2, 2_000)
    }
  }
}

export interface BusOptions {
  /** How long readings and inferences stay on the bus (default 24 h). */
  maxAgeMs?: number
  /** Stream replicas (1 on one server, 3 in a cluster). */
  replicas?: number
}

/** Stream configurations of the bus, as `provisionBus` creates them. */
export function streamConfigs(opts: BusOptions = {}): (Partial<StreamConfig> & { name: string })[] {
  const maxAge = nanos(opts.maxAgeMs ?? 24 * 3600_000)
  const common = {
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    num_replicas: opts.replicas ?? 1,
    duplicate_window: nanos(120_000),
  }
  return [
    { ...common, name: BUS.streams.telemetry, subjects: ['telemetry.raw.>'], max_age: maxAge },
    { ...common, name: BUS.streams.inferences, subjects: ['telemetry.inferred.>'], max_age: maxAge },
    {
      ...common,
      name: BUS.streams.rejected,
      subjects: ['telemetry.rejected.>'],
      max_age: nanos(7 * 24 * 3600_000),
      max_bytes: 1024 * 1024 * 1024,
    },
    { ...common, name: BUS.streams.commands, subjects: ['commands.>'], max_age: nanos(7 * 24 * 3600_000) },
  ]
}

/**
 * Creates or updates the streams, KV buckets and object store Vigil uses. Safe to run from every
 * process at every start: existing ones are updated in place, never recreated.
 */
export async function provisionBus(nc: NatsConnection, log: Logger, opts: BusOptions = {}): Promise<void> {
  const jsm = await jetstreamManager(nc)
  for (const config of streamConfigs(opts)) {
    const name = config.name
    try {
      await jsm.streams.info(name)
      await jsm.streams.update(name, config)
    } catch (err) {
      if (!isNotFound(err)) throw err
      try {
        await jsm.streams.add(config)
        log.info({ stream: name }, 'stream created')
      } catch (addErr) {
        // Another process created it between our look and our add.
        if (!/already in use|exists/i.test((addErr as Error).message)) throw addErr
      }
    }
  }
  const js = jetstream(nc)
  const kvm = new Kvm(js)
  await kvm.create(BUS.kv.devices, { history: 5, replicas: opts.replicas ?? 1 })
  await kvm.create(BUS.kv.modelAliases, { history: 10, replicas: opts.replicas ?? 1 })
  // One entry per command with its state history; kept a week.
  await kvm.create(BUS.kv.commands, { history: 1, replicas: opts.replicas ?? 1, ttl: 7 * 24 * 3600_000 })
  const objm = new Objm(js)
  await objm.create(BUS.objectStore.models, { replicas: opts.replicas ?? 1 })
}

function isNotFound(err: unknown): boolean {
  return /not found/i.test((err as Error)?.message ?? '')
}

/** Creates a durable pull consumer, or updates it when it exists. */
export async function ensureConsumer(
  jsm: JetStreamManager,
  stream: string,
  durable: string,
  opts: { filterSubject?: string; maxDeliver?: number; ackWaitMs?: number; maxAckPending?: number } = {},
): Promise<void> {
  const config = {
    durable_name: durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    max_deliver: opts.maxDeliver ?? 10,
    ack_wait: nanos(opts.ackWaitMs ?? 30_000),
    max_ack_pending: opts.maxAckPending ?? 10_000,
    ...(opts.filterSubject ? { filter_subject: opts.filterSubject } : {}),
  }
  try {
    await jsm.consumers.info(stream, durable)
    const { durable_name: _name, deliver_policy: _policy, ...updatable } = config
    await jsm.consumers.update(stream, durable, updatable)
  } catch (err) {
    if (!isNotFound(err)) throw err
    await jsm.consumers.add(stream, config)
  }
}

/** Thrown by a message handler for a message that can never be processed: terminated and dead-lettered. */
export class PoisonMessageError extends Error {
  override name = 'PoisonMessageError'
}

export interface ConsumerLoopOptions {
  js: JetStreamClient
  stream: string
  durable: string
  log: Logger
  signal: AbortSignal
  /** Handles one message; resolve to ack, throw PoisonMessageError to term, throw anything else to nak. */
  handle: (msg: JsMsg) => Promise<void>
  /** Messages handled at once (default 1). */
  concurrency?: number
  /** Messages pulled ahead of handling (default 256). */
  prefetch?: number
  /**
   * Waited for before each message is handed over, for a bound the message count does not give
   * (the store's writers bound the rows they hold, whatever the size of the messages).
   */
  ready?: () => Promise<void> | undefined
  /** Deliveries after which a failing message is treated as poison (default 10, as the consumer's max_deliver). */
  maxDeliver?: number
  /**
   * Keep poison messages on `telemetry.rejected.poison` (default). Off for the consumer of that
   * stream itself, where a dead letter of a dead letter would loop.
   */
  deadLetterPoison?: boolean
  /** First nak delay; doubles per redelivery up to maxBackoffMs (defaults 250 ms and 30 s). */
  backoffMs?: number
  maxBackoffMs?: number
}

/**
 * Consumes a durable pull consumer until `signal` aborts: bounded in-flight work, ack only after
 * the handler succeeded, nak with exponential backoff on failure, term and dead-letter poison.
 * The loop re-creates its subscription after any failure. Resolves once in-flight work is done.
 */
export async function runConsumer(opts: ConsumerLoopOptions): Promise<void> {
  const { js, log, signal } = opts
  const concurrency = Math.max(1, opts.concurrency ?? 1)
  const maxDeliver = opts.maxDeliver ?? 10
  const backoff = opts.backoffMs ?? 250
  const maxBackoff = opts.maxBackoffMs ?? 30_000
  const inFlight = new Set<Promise<void>>()
  let retryDelay = 250

  const handleOne = async (msg: JsMsg) => {
    try {
      await opts.handle(msg)
      msg.ack()
    } catch (err) {
      const deliveries = msg.info.deliveryCount
      if (err instanceof PoisonMessageError || deliveries >= maxDeliver) {
        const reason = err instanceof Error ? err.message : String(err)
        log.error({ subject: msg.subject, seq: msg.seq, deliveries, reason }, 'poison message: terminated')
        if (opts.deadLetterPoison !== false) {
          await keepRejected(js, {
            source: `consumer:${opts.durable}`,
            raw: msg.data,
            reason: RejectReason.POISON,
            detail: reason,
          }).catch((e: Error) => log.error({ err: e.message }, 'could not dead-letter a poison message'))
        }
        // No reason argument: nats-server 2.9 ignores "+TERM <reason>"; the reason is in the dead letter.
        msg.term()
        return
      }
      const delay = Math.min(backoff * 2 ** (deliveries - 1), maxBackoff)
      log.warn({ subject: msg.subject, seq: msg.seq, deliveries, delay, err: (err as Error).message }, 'nak')
      msg.nak(delay)
    }
  }

  while (!signal.aborted) {
    try {
      const consumer = await js.consumers.get(opts.stream, opts.durable)
      const messages = await consumer.consume({ max_messages: opts.prefetch ?? 256 })
      const stop = () => void messages.stop()
      signal.addEventListener('abort', stop, { once: true })
      retryDelay = 250
      try {
        for await (const msg of messages) {
          const wait = opts.ready?.()
          if (wait) await wait
          const p = handleOne(msg).finally(() => inFlight.delete(p))
          inFlight.add(p)
          if (inFlight.size >= concurrency) await Promise.race(inFlight)
          if (signal.aborted) break
        }
      } finally {
        signal.removeEventListener('abort', stop)
      }
    } catch (err) {
      if (signal.aborted) break
      log.warn(
        { stream: opts.stream, durable: opts.durable, err: (err as Error).message, retryDelay },
        'consumer failed',
      )
      await sleep(retryDelay, signal)
      retryDelay = Math.min(retryDelay * 2, 5_000)
    }
  }
  await Promise.all(inFlight)
}

/**
 * JetStream consumer lag as Prometheus gauges, read from the server at each scrape:
 * `vigil_consumer_pending` (messages not yet delivered), `vigil_consumer_ack_pending` (delivered,
 * not yet acknowledged) and `vigil_consumer_redelivered`, labelled by stream and durable.
 */
export function registerConsumerLag(
  registry: Registry,
  jsm: JetStreamManager,
  consumers: { stream: string; durable: string }[],
): void {
  const labelNames = ['stream', 'durable'] as const
  const gauge = (name: string, help: string, read: (info: ConsumerInfo) => number) =>
    registeredOnce(
      registry,
      name,
      () =>
        new Gauge({
          name,
          help,
          labelNames,
          registers: [registry],
          async collect() {
            for (const c of consumers) {
              const info = await jsm.consumers.info(c.stream, c.durable).catch(() => undefined)
              if (info) this.set({ stream: c.stream, durable: c.durable }, read(info))
            }
          },
        }),
    )
  gauge(
    'vigil_consumer_pending',
    'Messages of the stream not yet delivered to the consumer.',
    (i) => i.num_pending,
  )
  gauge(
    'vigil_consumer_ack_pending',
    'Messages delivered to the consumer and not yet acknowledged.',
    (i) => i.num_ack_pending,
  )
  gauge(
    'vigil_consumer_redelivered',
    'Messages delivered to the consumer more than once.',
    (i) => i.num_redelivered,
  )
}
