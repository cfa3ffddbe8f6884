// Commands between the bus and the devices. A DeliverCommandRequest on `device.cmd.<id>` (queue
// group of the bridges) is published to MQTT `devices/<id>/cmd` (QoS 1; on MQTT v5 with a response
// topic, the command id as correlation data and a message expiry); the broker's PUBACK says whether
// the device is there ("no matching subscribers" means offline). A device's answer on
// `devices/<id>/cmd/ack` (a shared subscription, so any bridge may get it) goes to the bus as a
// CommandAck on `device.ack.<commandId>`, where the DeviceService waits for it.
import { randomUUID } from 'node:crypto'
import { create, fromBinary, type JsonObject, toBinary } from '@bufbuild/protobuf'
import { durationMs } from '@bufbuild/protobuf/wkt'
import mqtt, { type IPublishPacket, type MqttClient, type Packet } from 'mqtt'
import {
  CommandAckSchema,
  DeliverCommandRequestSchema,
  DeliverCommandResponseSchema,
  DeliveryOutcome,
} from '../../gen/vigil/device/v1/device_pb.js'
import type { Logger } from '../common/log.js'
import { commandAckSubject, type NatsConnection } from '../common/nats.js'
import { validateDeviceId } from '../common/validation.js'

const NO_MATCHING_SUBSCRIBERS = 0x10
const MAX_ACK_BYTES = 64 * 1024

export interface RelayOptions {
  url: string
  auth: { username?: string; password?: string; ca?: Buffer; cert?: Buffer; key?: Buffer }
  shareGroup: string
  nc: NatsConnection
  log: Logger
}

export class CommandRelay {
  private readonly pubackCodes = new Map<number, number>()

  private constructor(
    private readonly client: MqttClient,
    private readonly opts: RelayOptions,
  ) {}

  static async start(opts: RelayOptions): Promise<CommandRelay> {
    const client = await mqtt
      .connectAsync(opts.url, {
        clientId: `vigil-commands-${randomUUID().slice(0, 8)}`,
        ...opts.auth,
        protocolVersion: 5,
        reconnectPeriod: 1_000,
        connectTimeout: 10_000,
      })
      .catch(async (err: Error) => {
        opts.log.warn(
          { err: err.message },
          'broker refused MQTT v5 for commands: using 3.1.1 (offline devices cannot be told apart)',
        )
        return mqtt.connectAsync(opts.url, {
          clientId: `vigil-commands-${randomUUID().slice(0, 8)}`,
          ...opts.auth,
          protocolVersion: 4,
          reconnectPeriod: 1_000,
        })
      })
    const relay = new CommandRelay(client, opts)
    client.on('packetreceive', (packet: Packet) => {
      if (packet.cmd === 'puback' && packet.messageId !== undefined)
        relay.pubackCodes.set(packet.messageId, (packet as { reasonCode?: number }).reasonCode ?? 0)
    })
    client.on('message', (topic, payload) => relay.onAck(topic, payload))
    const v5 = client.options.protocolVersion === 5
    await client.subscribeAsync(v5 ? `$share/${opts.shareGroup}/devices/+/cmd/ack` : 'devices/+/cmd/ack', {
      qos: 1,
    })
    relay.serve()
    return relay
  }

  private serve(): void {
    const { nc, log } = this.opts
    // `>`: device ids may hold dots.
    const sub = nc.subscribe('device.cmd.>', { queue: 'bridge' })
    void (async () => {
      for await (const msg of sub) {
        this.deliver(msg.data).then(
          (reply) => msg.respond(reply),
          (err: Error) => {
            log.error({ err: err.message }, 'command delivery failed')
            msg.respond(
              toBinary(
                DeliverCommandResponseSchema,
                create(DeliverCommandResponseSchema, {
                  outcome: DeliveryOutcome.FAILED,
                  detail: err.message,
                }),
              ),
            )
          },
        )
      }
    })()
  }

  private async deliver(data: Uint8Array): Promise<Uint8Array> {
    const req = fromBinary(DeliverCommandRequestSchema, data)
    const command = req.command
    const answer = (outcome: DeliveryOutcome, detail = '') =>
      toBinary(DeliverCommandResponseSchema, create(DeliverCommandResponseSchema, { outcome, detail }))
    if (!command || validateDeviceId(command.deviceId).length > 0)
      return answer(DeliveryOutcome.FAILED, 'no valid command')
    const body = JSON.stringify({
      commandId: command.commandId,
      name: command.name,
      payload: command.payload ?? {},
      ...(command.expiresAt
        ? { expiresAt: new Date(Number(command.expiresAt.seconds) * 1000).toISOString() }
        : {}),
    })
    const expirySeconds = req.expiresIn ? Math.max(1, Math.ceil(durationMs(req.expiresIn) / 1000)) : 0
    const packet = (await this.client.publishAsync(`devices/${command.deviceId}/cmd`, body, {
      qos: 1,
      properties: {
        responseTopic: `devices/${command.deviceId}/cmd/ack`,
        correlationData: Buffer.from(command.commandId),
        contentType: 'application/json',
        ...(expirySeconds > 0 ? { messageExpiryInterval: expirySeconds } : {}),
      },
    })) as IPublishPacket | undefined
    const id = packet?.messageId
    const code = id === undefined ? 0 : (this.pubackCodes.get(id) ?? 0)
    if (id !== undefined) this.pubackCodes.delete(id)
    if (code === NO_MATCHING_SUBSCRIBERS)
      return answer(DeliveryOutcome.OFFLINE, 'the device is not connected')
    return answer(DeliveryOutcome.SENT)
  }

  /** A device's answer: `{"commandId","ok","result","error"}` on `devices/<id>/cmd/ack`. */
  private onAck(topic: string, payload: Buffer): void {
    const { nc, log } = this.opts
    const deviceId = topic.split('/')[1] ?? ''
    try {
      if (payload.length > MAX_ACK_BYTES) throw new Error(`over ${MAX_ACK_BYTES} bytes`)
      const body = JSON.parse(payload.toString('utf8')) as {
        commandId?: unknown
        ok?: unknown
        result?: unknown
        error?: unknown
      }
      if (typeof body.commandId !== 'string' || body.commandId.length === 0 || body.commandId.length > 128)
        throw new Error('no commandId')
      const result =
        body.result && typeof body.result === 'object' && !Array.isArray(body.result)
          ? (body.result as JsonObject)
          : undefined
      const ack = create(CommandAckSchema, {
        commandId: body.commandId,
        deviceId,
        ok: body.ok !== false,
        result,
        error: typeof body.error === 'string' ? body.error.slice(0, 1024) : '',
      })
      nc.publish(commandAckSubject(body.commandId), toBinary(CommandAckSchema, ack))
    } catch (err) {
      log.warn(
        { device: deviceId, err: (err as Error).message },
        'command ack ignored: not {"commandId","ok",…}',
      )
    }
  }

  async stop(): Promise<void> {
    await this.client.endAsync()
  }
}
