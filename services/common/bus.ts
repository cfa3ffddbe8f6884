import { type JetStreamClient, jetstream } from '@nats-io/jetstream'
import type { CommonConfig } from './config.js'
import { connectNats, type NatsConnection, provisionBus } from './nats.js'
import type { ServiceKit } from './service.js'

/**
 * What every service on the bus does at start: connect (with retry), report NATS in /readyz,
 * drain at stop, and make sure the streams and buckets exist.
 */
export async function connectBus<C extends CommonConfig>(
  kit: ServiceKit<C>,
): Promise<{ nc: NatsConnection; js: JetStreamClient }> {
  const nc = await connectNats(kit.config, kit.log, { signal: kit.lifecycle.signal })
  kit.lifecycle.onStop('nats', () => nc.drain())
  kit.health.addCheck({ name: 'nats', ok: () => !nc.isClosed() })
  await provisionBus(nc, kit.log)
  return { nc, js: jetstream(nc) }
}
