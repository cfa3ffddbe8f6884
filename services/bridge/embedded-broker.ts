// vigil-embedded-broker: an in-process MQTT 3.1.1 broker (aedes) that `vigil up` runs when no
// broker is configured and mosquitto is not installed. It keeps queued messages in memory only
// and has no MQTT v5 and no shared subscriptions: fine for a laptop, not for production, where
// mosquitto (deploy/mosquitto/) is the broker.
import net from 'node:net'
import { Aedes } from 'aedes'
import { DEFAULT_PORTS, EnvReader } from '../common/config.js'
import { createLogger } from '../common/log.js'

const r = new EnvReader()
const port = r.int('VIGIL_MQTT_PORT', DEFAULT_PORTS.mqtt, 0, 65535)
const host = r.string('VIGIL_HOST', '127.0.0.1')
r.done()

const log = createLogger({ service: 'bridge', logLevel: 'info' }).child({ component: 'embedded-broker' })
const broker = await Aedes.createBroker({ concurrency: 1000, queueLimit: 1_000_000 })
const server = net.createServer(broker.handle)
server.listen(port, host, () =>
  log.info({ port, host }, 'embedded MQTT broker (aedes, MQTT 3.1.1) listening'),
)
broker.on('clientError', (client, err) =>
  log.warn({ client: client.id, err: err.message }, 'mqtt client error'),
)

const stop = () => {
  server.close()
  broker.close(() => log.info('embedded broker stopped'))
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
