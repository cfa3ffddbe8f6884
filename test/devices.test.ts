import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { durationFromMs } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { jetstreamManager } from '@nats-io/jetstream'
import mqtt from 'mqtt'
import {
  CommandState,
  DeviceService,
  DeviceStatus,
  type SendCommandResponse,
} from '../gen/vigil/device/v1/device_pb.js'
import { violationsOf } from '../services/common/errors.js'
import { createLogger } from '../services/common/log.js'
import { connectNats, type NatsConnection, provisionBus } from '../services/common/nats.js'
import { eventually, storedReadings } from './fixtures/bus.js'
import { type MosquittoFixture, startMosquitto } from './fixtures/mosquitto.js'
import { type NatsFixture, startNats } from './fixtures/nats.js'
import { startChild, tempDir } from './fixtures/process.js'
import { type ServiceProcess, startService, startVigil } from './fixtures/services.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })
const BRIDGE = { username: 'vigil-bridge', password: 'bridge-secret-for-tests' }

describe('devices: registry, per-device credentials and topic ACLs on mosquitto with dynamic security', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let broker: MosquittoFixture
  let query: ServiceProcess
  let bridge: ServiceProcess | undefined
  const dir = tempDir('devices')
  const client = () =>
    createClient(DeviceService, createConnectTransport({ baseUrl: query.url, httpVersion: '1.1' }))
  const connect = (username: string, password: string, protocolVersion: 4 | 5 = 5) =>
    mqtt.connectAsync(broker.url, {
      username,
      password,
      protocolVersion,
      clientId: `${username}-${Math.random().toString(36).slice(2, 8)}`,
      reconnectPeriod: 0,
      connectTimeout: 5_000,
    })
  const reading = (seq: number) =>
    JSON.stringify({ ts: new Date().toISOString(), sensors: { temp: 20 + seq }, seq })

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    broker = await startMosquitto([], { dynsec: BRIDGE })
    query = await startService('query', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_DATA_DIR: dir.path,
      VIGIL_MQTT_DYNSEC: 'true',
    })
  })
  after(async () => {
    await bridge?.stop()
    await query?.stop()
    await broker?.stop()
    await nc?.drain()
    await nats?.stop()
    dir.remove()
  })

  it('refuses a registration no bridge could complete, and keeps nothing of it', async () => {
    await assert.rejects(client().registerDevice({ deviceId: 'early-1' }), (err: ConnectError) => {
      assert.equal(err.code, Code.Unavailable)
      assert.match(err.rawMessage, /is a bridge running with VIGIL_MQTT_DYNSEC=true\? Nothing was registered/)
      return true
    })
    await assert.rejects(
      client().getDevice({ deviceId: 'early-1' }),
      (err: ConnectError) => err.code === Code.NotFound,
    )
    bridge = await startService('bridge', {
      VIGIL_NATS_URL: nats.url,
      VIGIL_MQTT_URL: broker.url,
      VIGIL_MQTT_USERNAME: BRIDGE.username,
      VIGIL_MQTT_PASSWORD: BRIDGE.password,
      VIGIL_MQTT_DYNSEC: 'true',
      VIGIL_BATCH_LINGER_MS: '5',
    })
  })

  it('registers a device with credentials shown once; it connects and its readings reach the stream', async () => {
    const res = await client().registerDevice({ deviceId: 'pump-1', site: 'north', labels: { model: 'X2' } })
    assert.equal(res.device?.status, DeviceStatus.ACTIVE)
    assert.equal(res.credentials?.username, 'pump-1')
    assert.ok((res.credentials?.password.length ?? 0) >= 32)
    const got = await client().getDevice({ deviceId: 'pump-1' })
    assert.equal(got.device?.site, 'north')
    assert.deepEqual(got.device?.labels, { model: 'X2' })
    // The registry keeps only the salted hash.
    const raw = await (await import('../services/common/devices.js')).DeviceRegistry.open(nc)
    const record = await raw.record('pump-1')
    assert.equal(record?.passwordHash.length, 32)
    assert.ok(
      !Buffer.from(record?.passwordHash ?? [])
        .toString('latin1')
        .includes(res.credentials?.password ?? ''),
    )

    const device = await connect('pump-1', res.credentials?.password ?? '')
    await device.publishAsync('devices/pump-1/telemetry', reading(1), { qos: 1 })
    await eventually(
      async () => (await storedReadings(nc)).readings.some((r) => r.eventId === 'pump-1:seq:1'),
      10_000,
      'the reading on the bus',
    )
    await device.endAsync()
  })

  it('refuses an unknown device and a wrong password', async () => {
    await assert.rejects(connect('nobody', 'x'), /Not authorized/)
    await assert.rejects(connect('pump-1', 'wrong-password'), /Not authorized/)
  })

  it("keeps a device off another device's topics: publish refused (v5) or dropped (v3.1.1), subscribe refused", async () => {
    const a = await client().registerDevice({ deviceId: 'pump-2' })
    const b = await client().registerDevice({ deviceId: 'pump-3' })
    const v5 = await connect('pump-2', a.credentials?.password ?? '')
    await assert.rejects(
      v5.publishAsync('devices/pump-3/telemetry', reading(1), { qos: 1 }),
      /Not authorized/,
    )
    await assert.rejects(v5.subscribeAsync('devices/pump-3/cmd', { qos: 1 }), /Not authorized/)
    const own = await v5.subscribeAsync('devices/pump-2/cmd', { qos: 1 })
    assert.equal(own[0]?.qos, 1)
    const v3 = await connect('pump-3', b.credentials?.password ?? '', 4)
    await v3.publishAsync('devices/pump-2/telemetry', reading(2), { qos: 1 }) // acknowledged, dropped
    await v3.publishAsync('devices/pump-3/telemetry', reading(3), { qos: 1 })
    await eventually(
      async () => (await storedReadings(nc)).readings.some((r) => r.eventId === 'pump-3:seq:3'),
      10_000,
      "pump-3's own reading",
    )
    const { readings } = await storedReadings(nc)
    assert.ok(!readings.some((r) => r.deviceId === 'pump-2'), 'nothing in the name of pump-2')
    assert.ok(!readings.some((r) => r.deviceId === 'pump-3' && r.eventId !== 'pump-3:seq:3'))
    await Promise.all([v5.endAsync(), v3.endAsync()])
  })

  it('revoking a device disconnects it and refuses its next connection', async () => {
    const res = await client().registerDevice({ deviceId: 'pump-4' })
    const password = res.credentials?.password ?? ''
    const device = await connect('pump-4', password)
    const closed = new Promise<void>((resolve) => device.once('close', () => resolve()))
    const revoked = await client().revokeDevice({ deviceId: 'pump-4' })
    assert.equal(revoked.device?.status, DeviceStatus.REVOKED)
    await closed
    device.end(true)
    await eventually(
      async () =>
        connect('pump-4', password).then(
          async (c) => {
            await c.endAsync()
            return false
          },
          (err: Error) => /Not authorized/.test(err.message),
        ),
      10_000,
      'the revoked device refused',
    )
  })

  it('answers registry mistakes with the right codes', async () => {
    await assert.rejects(client().registerDevice({ deviceId: 'pump-1' }), (err: ConnectError) => {
      assert.equal(err.code, Code.AlreadyExists)
      return true
    })
    await assert.rejects(client().registerDevice({ deviceId: 'bad id/+' }), (err) => {
      assert.equal(ConnectError.from(err).code, Code.InvalidArgument)
      assert.equal(violationsOf(err)[0]?.field, 'device_id')
      return true
    })
    await assert.rejects(
      client().getDevice({ deviceId: 'ghost' }),
      (err: ConnectError) => err.code === Code.NotFound,
    )
    await assert.rejects(
      client().revokeDevice({ deviceId: 'ghost' }),
      (err: ConnectError) => err.code === Code.NotFound,
    )
    await assert.rejects(client().registerDevice({ deviceId: 'x', labels: { '': 'v' } }), (err) => {
      assert.equal(violationsOf(err)[0]?.field, 'labels[""]')
      return true
    })
  })

  it('vigil devices adds, lists, shows, updates and revokes', async () => {
    const vigil = async (args: string[]) => {
      const child = startVigil(['devices', ...args], { VIGIL_QUERY_ADDR: query.url })
      return { code: await child.exited, output: child.output() }
    }
    const add = await vigil(['add', 'fan-9', '--site', 'south', '--label', 'floor=2'])
    assert.equal(add.code, 0, add.output)
    assert.match(add.output, /MQTT password: [A-Za-z0-9_-]{32}/)
    assert.match(add.output, /shown this once/)
    const list = await vigil(['list', '--site', 'south'])
    assert.match(list.output, /fan-9\s+south\s+active\s+floor=2/)
    const update = await vigil(['update', 'fan-9', '--label', 'floor=3'])
    assert.match(update.output, /labels\s+floor=3/)
    const revoke = await vigil(['revoke', 'fan-9'])
    assert.match(revoke.output, /revoked fan-9/)
    const dup = await vigil(['add', 'fan-9'])
    assert.equal(dup.code, 1)
    assert.match(dup.output, /already registered/)
  })

  it('the bridge logs nothing it should not', async () => {
    const jsm = await jetstreamManager(nc)
    assert.ok((await jsm.streams.info('TELEMETRY')).state.messages > 0)
    assert.doesNotMatch(bridge?.output() ?? '', /"level":50/)
  })

  describe('command & control', () => {
    /** A device (mqtt.js, MQTT v5) that answers its commands with `answer`, or not at all. */
    async function device(
      id: string,
      answer?: (cmd: { commandId: string; name: string; payload: unknown }) => object,
    ) {
      const { credentials } = await client().registerDevice({ deviceId: id })
      const c = await connect(id, credentials?.password ?? '')
      const received: { commandId: string; name: string; payload: unknown }[] = []
      c.on('message', (_topic, payload) => {
        const cmd = JSON.parse(payload.toString())
        received.push(cmd)
        if (answer)
          c.publish(`devices/${id}/cmd/ack`, JSON.stringify({ commandId: cmd.commandId, ...answer(cmd) }), {
            qos: 1,
          })
      })
      await c.subscribeAsync(`devices/${id}/cmd`, { qos: 1 })
      return { client: c, received, password: credentials?.password ?? '' }
    }
    const states = (history: { state: CommandState }[]) => history.map((h) => CommandState[h.state])

    it('round trip with a device on mqtt.js: acknowledged with its result, or rejected with its reason', async () => {
      const d = await device('cmd-1', (cmd) =>
        cmd.name === 'set-interval'
          ? { ok: true, result: { interval: (cmd.payload as { seconds: number }).seconds } }
          : { ok: false, error: 'unsupported command' },
      )
      const acked = await client().sendCommand({
        deviceId: 'cmd-1',
        name: 'set-interval',
        payload: { seconds: 5 },
      })
      assert.equal(acked.command?.state, CommandState.ACKED)
      assert.deepEqual(acked.command?.result, { interval: 5 })
      assert.deepEqual(states(acked.command?.history ?? []), ['SENT', 'ACKED'])
      assert.deepEqual(d.received[0]?.payload, { seconds: 5 })
      const rejected = await client().sendCommand({ deviceId: 'cmd-1', name: 'self-destruct' })
      assert.equal(rejected.command?.state, CommandState.REJECTED)
      assert.equal(rejected.command?.history.at(-1)?.detail, 'unsupported command')
      const listed = await client().listCommands({ deviceId: 'cmd-1' })
      assert.deepEqual(
        listed.commands.map((c) => c.name),
        ['self-destruct', 'set-interval'],
      )
      await d.client.endAsync()
    })

    it('round trip with mosquitto_sub and mosquitto_pub as the device', async () => {
      const { credentials } = await client().registerDevice({ deviceId: 'cmd-2' })
      const auth = [
        '-h',
        '127.0.0.1',
        '-p',
        String(broker.port),
        '-u',
        'cmd-2',
        '-P',
        credentials?.password ?? '',
      ]
      const sub = startChild('mosquitto_sub', [
        ...auth,
        '-V',
        'mqttv5',
        '-q',
        '1',
        '-t',
        'devices/cmd-2/cmd',
        '-C',
        '1',
      ])
      // Send until the subscription is in place (before it, the device is offline).
      let sent: Promise<SendCommandResponse> | undefined
      await eventually(
        async () => {
          const res = client().sendCommand({
            deviceId: 'cmd-2',
            name: 'reboot',
            timeout: durationFromMs(20_000),
          })
          const first = await Promise.race([res, new Promise((r) => setTimeout(() => r('pending'), 300))])
          if (first === 'pending') {
            sent = res
            return true
          }
          return false
        },
        10_000,
        'the command delivered to mosquitto_sub',
      )
      assert.equal(await sub.exited, 0)
      const cmd = JSON.parse(sub.output().trim().split('\n').at(-1) ?? '{}')
      assert.equal(cmd.name, 'reboot')
      const pub = startChild('mosquitto_pub', [
        ...auth,
        '-q',
        '1',
        '-t',
        'devices/cmd-2/cmd/ack',
        '-m',
        JSON.stringify({ commandId: cmd.commandId, ok: true, result: { rebooting: true } }),
      ])
      assert.equal(await pub.exited, 0, pub.output())
      const done = await sent
      assert.equal(done?.command?.state, CommandState.ACKED)
      assert.deepEqual(done?.command?.result, { rebooting: true })
    })

    it('times out when the device does not answer, and says when a device is offline', async () => {
      const d = await device('cmd-3')
      const silent = await client().sendCommand({
        deviceId: 'cmd-3',
        name: 'reboot',
        timeout: durationFromMs(500),
      })
      assert.equal(silent.command?.state, CommandState.TIMED_OUT)
      assert.equal(d.received.length, 1)
      await d.client.endAsync()
      const offline = await client().sendCommand({ deviceId: 'cmd-3', name: 'reboot' })
      assert.equal(offline.command?.state, CommandState.OFFLINE)
    })

    it('queues a command for an offline device and delivers it when the device is back; expires one that waits too long', async () => {
      const { credentials } = await client().registerDevice({ deviceId: 'cmd-4' })
      const queued = await client().sendCommand({
        deviceId: 'cmd-4',
        name: 'set-threshold',
        payload: { value: 3 },
        queueIfOffline: true,
        timeout: durationFromMs(10_000),
      })
      assert.equal(queued.command?.state, CommandState.QUEUED)
      const expiring = await client().sendCommand({
        deviceId: 'cmd-4',
        name: 'reboot',
        queueIfOffline: true,
        expiresIn: durationFromMs(1_000),
      })
      assert.equal(expiring.command?.state, CommandState.QUEUED)
      await eventually(
        async () =>
          (await client().listCommands({ deviceId: 'cmd-4' })).commands.find((c) => c.name === 'reboot')
            ?.state === CommandState.EXPIRED,
        15_000,
        'the short-lived command expired',
      )
      // The device comes back: it gets the queued command, and only that one.
      const c = await connect('cmd-4', credentials?.password ?? '')
      const received: string[] = []
      c.on('message', (_t, payload) => {
        const cmd = JSON.parse(payload.toString())
        received.push(cmd.name)
        c.publish('devices/cmd-4/cmd/ack', JSON.stringify({ commandId: cmd.commandId, ok: true }), { qos: 1 })
      })
      await c.subscribeAsync('devices/cmd-4/cmd', { qos: 1 })
      await eventually(
        async () =>
          (await client().listCommands({ deviceId: 'cmd-4' })).commands.find(
            (x) => x.name === 'set-threshold',
          )?.state === CommandState.ACKED,
        15_000,
        'the queued command acknowledged',
      )
      const history = (await client().listCommands({ deviceId: 'cmd-4' })).commands.find(
        (x) => x.name === 'set-threshold',
      )
      assert.deepEqual(states(history?.history ?? []), ['QUEUED', 'SENT', 'ACKED'])
      await new Promise((r) => setTimeout(r, 2_500))
      assert.deepEqual(received, ['set-threshold'])
      await c.endAsync()
    })

    it('keeps a queued command through a restart of the query service and delivers it after', async () => {
      const { credentials } = await client().registerDevice({ deviceId: 'cmd-5' })
      const queued = await client().sendCommand({ deviceId: 'cmd-5', name: 'reboot', queueIfOffline: true })
      assert.equal(queued.command?.state, CommandState.QUEUED)
      await query.stop()
      query = await startService('query', {
        VIGIL_NATS_URL: nats.url,
        VIGIL_DATA_DIR: dir.path,
        VIGIL_MQTT_DYNSEC: 'true',
      })
      const listed = await client().listCommands({ deviceId: 'cmd-5' })
      assert.equal(listed.commands[0]?.state, CommandState.QUEUED)
      const c = await connect('cmd-5', credentials?.password ?? '')
      c.on('message', (_t, payload) => {
        const cmd = JSON.parse(payload.toString())
        c.publish('devices/cmd-5/cmd/ack', JSON.stringify({ commandId: cmd.commandId, ok: true }), { qos: 1 })
      })
      await c.subscribeAsync('devices/cmd-5/cmd', { qos: 1 })
      await eventually(
        async () =>
          (await client().listCommands({ deviceId: 'cmd-5' })).commands[0]?.state === CommandState.ACKED,
        15_000,
        'the queued command delivered by the restarted service',
      )
      await c.endAsync()
    })

    it('answers command mistakes with the right codes', async () => {
      await assert.rejects(
        client().sendCommand({ deviceId: 'ghost', name: 'reboot' }),
        (err: ConnectError) => err.code === Code.NotFound,
      )
      await assert.rejects(client().sendCommand({ deviceId: 'cmd-1', name: 'Bad Name!' }), (err) => {
        assert.equal(violationsOf(err)[0]?.field, 'name')
        return true
      })
      await assert.rejects(
        client().sendCommand({ deviceId: 'pump-4', name: 'reboot' }),
        (err: ConnectError) => err.code === Code.FailedPrecondition,
      )
    })
  })

  it('vigil simulate: devices register themselves, publish readings with injected anomalies, and answer commands', async () => {
    const sim = startVigil(
      [
        'simulate',
        '--devices',
        '3',
        '--interval',
        '100ms',
        '--anomaly-rate',
        '0.2',
        '--for',
        '6s',
        '--prefix',
        'simt',
      ],
      { VIGIL_QUERY_ADDR: query.url, VIGIL_MQTT_URL: broker.url, VIGIL_DATA_DIR: dir.path },
    )
    await eventually(
      async () =>
        (await storedReadings(nc)).readings.filter((r) => r.deviceId.startsWith('simt-')).length >= 30,
      20_000,
      'simulated readings on the bus',
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${sim.output()}`)
    })
    const answered = await client().sendCommand({
      deviceId: 'simt-0002',
      name: 'set-interval',
      payload: { seconds: 0.2 },
    })
    assert.equal(
      answered.command?.state,
      CommandState.ACKED,
      (answered.command?.history ?? []).map((h) => h.detail).join('; '),
    )
    assert.deepEqual(answered.command?.result, { intervalSeconds: 0.2 })
    const refused = await client().sendCommand({ deviceId: 'simt-0002', name: 'dance' })
    assert.equal(refused.command?.state, CommandState.REJECTED)
    assert.equal(await sim.exited, 0, sim.output())
    assert.match(sim.output(), /registered 3 devices/)
    const { readings } = await storedReadings(nc)
    const simulated = readings.filter((r) => r.deviceId.startsWith('simt-'))
    assert.deepEqual([...new Set(simulated.map((r) => r.deviceId))].sort(), [
      'simt-0001',
      'simt-0002',
      'simt-0003',
    ])
    assert.ok(
      simulated.some((r) => r.meta.sim_anomaly),
      'some anomalies injected and labelled',
    )
    assert.equal(Object.keys(simulated[0]?.sensors ?? {}).length, 6)
    const registered = await client().listDevices({ site: '' })
    assert.ok(registered.devices.some((d) => d.deviceId === 'simt-0001' && d.labels.simulated === 'true'))
  })
})
