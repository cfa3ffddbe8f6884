// Commands to devices: SendCommand's round trip through a bridge and the device, the state of every
// command in the KV bucket `commands` (key `<device key>.<command id>`, so it survives restarts of
// any process), and the dispatcher that delivers queued commands once their device is back and
// expires the ones that waited too long.
import { randomUUID } from 'node:crypto'
import { create, fromBinary, type JsonObject, toBinary } from '@bufbuild/protobuf'
import {
  durationFromMs,
  durationMs,
  timestampDate,
  timestampFromMs,
  timestampNow,
} from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import { jetstream } from '@nats-io/jetstream'
import { type KV, Kvm } from '@nats-io/kv'
import {
  type Command,
  CommandAckSchema,
  CommandSchema,
  CommandState,
  DeliverCommandRequestSchema,
  DeliverCommandResponseSchema,
  DeliveryOutcome,
  DeviceStatus,
  type SendCommandRequest,
} from '../../gen/vigil/device/v1/device_pb.js'
import { type DeviceRegistry, deviceKey } from '../common/devices.js'
import { invalidArgument, type Violation } from '../common/errors.js'
import { sleep } from '../common/health.js'
import type { Logger } from '../common/log.js'
import { BUS, commandAckSubject, commandSubject, type NatsConnection } from '../common/nats.js'
import { validateDeviceId } from '../common/validation.js'
import { page } from './inputs.js'

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/
const DEFAULT_TIMEOUT_MS = 10_000
const MAX_TIMEOUT_MS = 5 * 60_000
const DEFAULT_EXPIRY_MS = 3600_000
const MAX_EXPIRY_MS = 7 * 24 * 3600_000
const MAX_PAYLOAD_BYTES = 16 * 1024

export class CommandService {
  private constructor(
    private readonly nc: NatsConnection,
    private readonly kv: KV,
    private readonly devices: DeviceRegistry,
    private readonly log: Logger,
  ) {}

  static async open(nc: NatsConnection, devices: DeviceRegistry, log: Logger): Promise<CommandService> {
    return new CommandService(nc, await new Kvm(jetstream(nc)).open(BUS.kv.commands), devices, log)
  }

  private key(c: Pick<Command, 'deviceId' | 'commandId'>): string {
    return `${deviceKey(c.deviceId)}.${c.commandId}`
  }

  private async save(command: Command, state: CommandState, detail = ''): Promise<void> {
    command.state = state
    command.history.push({
      $typeName: 'vigil.device.v1.CommandTransition',
      state,
      at: timestampNow(),
      detail,
    })
    await this.kv.put(this.key(command), toBinary(CommandSchema, command))
  }

  /** SendCommand: deliver, wait for the device's answer or the timeout; or queue it when asked to. */
  async send(req: SendCommandRequest): Promise<Command> {
    const violations: Violation[] = [...validateDeviceId(req.deviceId)]
    if (!NAME.test(req.name))
      violations.push({
        field: 'name',
        description: 'must be 1 to 64 of a-z 0-9 . _ - (for example "reboot")',
      })
    const timeoutMs = req.timeout ? durationMs(req.timeout) : DEFAULT_TIMEOUT_MS
    if (!(timeoutMs >= 100 && timeoutMs <= MAX_TIMEOUT_MS))
      violations.push({ field: 'timeout', description: 'must be from 100 ms to 5 minutes' })
    const expiryMs = req.expiresIn ? durationMs(req.expiresIn) : DEFAULT_EXPIRY_MS
    if (!(expiryMs >= 1_000 && expiryMs <= MAX_EXPIRY_MS))
      violations.push({ field: 'expires_in', description: 'must be from 1 second to 7 days' })
    if (Buffer.byteLength(JSON.stringify(req.payload ?? {})) > MAX_PAYLOAD_BYTES)
      violations.push({ field: 'payload', description: `must be at most ${MAX_PAYLOAD_BYTES} bytes as JSON` })
    if (violations.length > 0) throw invalidArgument('SendCommandRequest', violations)
    const device = await this.devices.record(req.deviceId)
    if (!device?.device) throw new ConnectError(`device ${req.deviceId} is not registered`, Code.NotFound)
    if (device.device.status !== DeviceStatus.ACTIVE)
      throw new ConnectError(`device ${req.deviceId} is revoked`, Code.FailedPrecondition)

    const command = create(CommandSchema, {
      commandId: randomUUID(),
      deviceId: req.deviceId,
      name: req.name,
      payload: req.payload as JsonObject | undefined,
      createdAt: timestampNow(),
      timeout: durationFromMs(timeoutMs),
      ...(req.queueIfOffline ? { expiresAt: timestampFromMs(Date.now() + expiryMs) } : {}),
    })
    const outcome = await this.deliver(command, req.queueIfOffline ? expiryMs : timeoutMs)
    if (outcome.outcome === DeliveryOutcome.OFFLINE) {
      if (req.queueIfOffline)
        await this.save(command, CommandState.QUEUED, 'the device is offline: delivered when it is back')
      else await this.save(command, CommandState.OFFLINE, outcome.detail)
      return command
    }
    if (outcome.outcome !== DeliveryOutcome.SENT) {
      await this.save(command, CommandState.FAILED, outcome.detail)
      return command
    }
    await this.save(command, CommandState.SENT)
    await this.awaitAck(command, outcome, timeoutMs)
    return command
  }

  /**
   * Hands the command to a bridge. Subscribes to the device's answer first (so a fast device is not
   * missed) and returns the pending answer with the outcome.
   */
  /** One more try to deliver a queued command; on success it waits for the device's answer. */
  private async redeliver(command: Command, expiresAt: number): Promise<void> {
    const outcome = await this.deliver(command, expiresAt - Date.now())
    if (outcome.outcome !== DeliveryOutcome.SENT) return
    await this.save(command, CommandState.SENT, 'delivered after the device came back')
    const timeoutMs = command.timeout ? durationMs(command.timeout) : DEFAULT_TIMEOUT_MS
    void this.awaitAck(command, outcome, timeoutMs).catch((err: Error) =>
      this.log.error({ command: command.commandId, err: err.message }, 'command state not saved'),
    )
  }

  private async deliver(
    command: Command,
    expiresInMs: number,
  ): Promise<{
    outcome: DeliveryOutcome
    detail: string
    ack: Promise<Uint8Array | undefined>
    cancel: () => void
  }> {
    const sub = this.nc.subscribe(commandAckSubject(command.commandId), { max: 1 })
    const ack = (async () => {
      for await (const m of sub) return m.data
      return undefined
    })()
    try {
      const reply = await this.nc.request(
        commandSubject(command.deviceId),
        toBinary(
          DeliverCommandRequestSchema,
          create(DeliverCommandRequestSchema, { command, expiresIn: durationFromMs(expiresInMs) }),
        ),
        { timeout: 5_000 },
      )
      const res = fromBinary(DeliverCommandResponseSchema, reply.data)
      if (res.outcome !== DeliveryOutcome.SENT) sub.unsubscribe()
      return { outcome: res.outcome, detail: res.detail, ack, cancel: () => sub.unsubscribe() }
    } catch (err) {
      sub.unsubscribe()
      return {
        outcome: DeliveryOutcome.FAILED,
        detail: `no bridge took the command (${(err as Error).message}); is the bridge running?`,
        ack,
        cancel: () => {},
      }
    }
  }

  private async awaitAck(
    command: Command,
    { ack, cancel }: { ack: Promise<Uint8Array | undefined>; cancel: () => void },
    timeoutMs: number,
  ): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), timeoutMs)
    })
    const data = await Promise.race([ack, timedOut])
    clearTimeout(timer)
    if (!data) {
      cancel()
      await this.save(command, CommandState.TIMED_OUT, `no answer from the device within ${timeoutMs} ms`)
      return
    }
    const answer = fromBinary(CommandAckSchema, data)
    if (answer.result) command.result = answer.result
    if (answer.ok) await this.save(command, CommandState.ACKED)
    else await this.save(command, CommandState.REJECTED, answer.error || 'the device refused it')
  }

  /** ListCommands: a device's commands, newest first, paged. */
  async list(
    deviceId: string,
    pageSize: number,
    pageToken: string,
  ): Promise<{ commands: Command[]; next: string }> {
    const violations = validateDeviceId(deviceId)
    if (violations.length > 0) throw invalidArgument('ListCommandsRequest', violations)
    const { limit, offset } = page(pageSize, pageToken)
    const all: Command[] = []
    for await (const key of await this.kv.keys(`${deviceKey(deviceId)}.*`)) {
      const entry = await this.kv.get(key)
      if (entry?.operation === 'PUT') all.push(fromBinary(CommandSchema, entry.value))
    }
    all.sort((a, b) => timestampDate(b.createdAt!).getTime() - timestampDate(a.createdAt!).getTime())
    const commands = all.slice(offset, offset + limit)
    return { commands, next: offset + limit < all.length ? String(offset + limit) : '' }
  }

  /**
   * Every `intervalMs`: expires queued commands past their time, and tries to deliver the others
   * (a device that is back gets them; delivery is at least once — devices should ignore a command
   * id they already carried out).
   */
  async runDispatcher(signal: AbortSignal, intervalMs = 2_000): Promise<void> {
    while (!signal.aborted) {
      try {
        // Expired commands first, then the deliveries side by side: a bridge slow to answer one
        // (up to the 5 s request timeout) must not hold back the others or another's expiry.
        const queued: { command: Command; expiresAt: number }[] = []
        for await (const key of await this.kv.keys()) {
          const entry = await this.kv.get(key)
          if (entry?.operation !== 'PUT') continue
          const command = fromBinary(CommandSchema, entry.value)
          if (command.state !== CommandState.QUEUED) continue
          const expiresAt = command.expiresAt ? timestampDate(command.expiresAt).getTime() : 0
          if (expiresAt <= Date.now())
            await this.save(command, CommandState.EXPIRED, 'not delivered before it expired')
          else queued.push({ command, expiresAt })
        }
        await Promise.all(queued.map(({ command, expiresAt }) => this.redeliver(command, expiresAt)))
      } catch (err) {
        if (!signal.aborted) this.log.warn({ err: (err as Error).message }, 'command dispatcher pass failed')
      }
      await sleep(intervalMs, signal).catch(() => undefined)
    }
  }
}
