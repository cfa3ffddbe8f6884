// vigil-bridge: MQTT devices → JetStream (see services/bridge/README.md).
import { producerBatcher } from '../common/batcher.js'
import { connectBus } from '../common/bus.js'
import { DEFAULT_PORTS } from '../common/config.js'
import { DeviceRegistry } from '../common/devices.js'
import { DynsecClient } from '../common/dynsec.js'
import { RateLimiter } from '../common/rate-limit.js'
import { runService } from '../common/service.js'
import { Bridge } from './bridge.js'
import { CommandRelay } from './command-relay.js'
import { readBridgeConfig } from './config.js'
import { runDeviceSync } from './device-sync.js'
import { MqttSession } from './mqtt-session.js'

await runService({
  name: 'bridge',
  defaultPort: DEFAULT_PORTS.bridge,
  readConfig: readBridgeConfig,
  async start(kit) {
    const { config, log, metrics, health, lifecycle } = kit
    const { nc, js } = await connectBus(kit)
    if (config.mqttDynsec) {
      const dynsec = await DynsecClient.connect(
        config.mqttUrl,
        {
          username: config.mqttUsername,
          password: config.mqttPassword,
          ca: config.mqttCa,
          cert: config.mqttCert,
          key: config.mqttKey,
        },
        log,
      )
      lifecycle.onStop('dynamic security', () => dynsec.close())
      const registry = await DeviceRegistry.open(nc)
      const sync = runDeviceSync({ nc, registry, dynsec, log, signal: lifecycle.signal }).catch(
        (err: Error) => log.error({ err: err.message }, 'device sync stopped'),
      )
      lifecycle.onStop('device sync', () => sync)
      log.info("keeping the broker's dynamic security in step with the device registry")
    }
    // Commands to devices: deliveries from the bus to MQTT, the devices' answers back to the bus.
    const relay = await CommandRelay.start({
      url: config.mqttUrl,
      auth: {
        username: config.mqttUsername,
        password: config.mqttPassword,
        ca: config.mqttCa,
        cert: config.mqttCert,
        key: config.mqttKey,
      },
      shareGroup: config.mqttShareGroup,
      nc,
      log,
    })
    lifecycle.onStop('command relay', () => relay.stop())
    const batcher = producerBatcher(kit, js)
    let bridge: Bridge | undefined
    const session = new MqttSession({
      url: config.mqttUrl,
      clientId: config.mqttClientId,
      username: config.mqttUsername,
      password: config.mqttPassword,
      ca: config.mqttCa,
      cert: config.mqttCert,
      key: config.mqttKey,
      topicFilter: 'devices/+/telemetry',
      shareGroup: config.mqttShareGroup,
      // Backpressure comes from pausing the socket (VIGIL_BRIDGE_MAX_PENDING), not from a small
      // Receive Maximum: with 500, mosquitto 2.0.11 stopped sending to the session after an outage.
      receiveMaximum: 65_535,
      log,
      onMessage: (msg) => bridge!.onMessage(msg),
    })
    bridge = new Bridge({
      session,
      batcher,
      js,
      rateLimiter: new RateLimiter(config.deviceRate, config.deviceBurst),
      log,
      registry: metrics.registry,
      maxPending: config.maxPending,
    })
    health.addCheck({ name: 'mqtt', ok: () => session.isConnected })
    lifecycle.onStop('mqtt', async () => {
      // Stop taking messages, store what is held and acknowledge it, then leave the broker.
      session.pause()
      await batcher.close()
      await new Promise((resolve) => setImmediate(resolve))
      await session.stop()
    })
    await session.start()
    return { routes: () => {} }
  },
})
