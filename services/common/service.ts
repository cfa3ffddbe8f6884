import type { ConnectRouter, Interceptor } from '@connectrpc/connect'
import { userAuthentication } from './auth.js'
import { type CommonConfig, ConfigError, EnvReader, readCommonConfig, type ServiceName } from './config.js'
import { HealthState } from './health.js'
import { Lifecycle } from './lifecycle.js'
import { createLogger, type Logger } from './log.js'
import { Metrics } from './metrics.js'
import { type HttpRoute, type RunningServer, startServer } from './server.js'
import { initTracing, shutdownTracing } from './tracing.js'

/** What a service's `main.ts` gets to build its context from. */
export interface ServiceKit<C extends CommonConfig> {
  config: C
  log: Logger
  metrics: Metrics
  health: HealthState
  lifecycle: Lifecycle
}

export interface ServiceDefinition<C extends CommonConfig> {
  name: ServiceName
  defaultPort: number
  /** Reads the service's own variables on top of the common ones. */
  readConfig?: (r: EnvReader, common: CommonConfig) => C
  /**
   * Connects dependencies and returns the routes to serve. Register stoppers with
   * `kit.lifecycle.onStop`; they run after the server drained, in reverse order.
   */
  start: (kit: ServiceKit<C>) => Promise<{
    routes: (router: ConnectRouter) => void
    httpRoutes?: HttpRoute[]
    authenticate?: Interceptor
  }>
}

/**
 * Runs a service process: config (fails fast naming the bad variables), logger, metrics, one
 * server, readiness once started, and a clean stop on SIGTERM/SIGINT.
 */
export async function runService<C extends CommonConfig>(
  def: ServiceDefinition<C>,
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ kit: ServiceKit<C>; server: RunningServer }> {
  let config: C
  try {
    const r = new EnvReader(env)
    const common = readCommonConfig(r, def.name, def.defaultPort)
    config = def.readConfig ? def.readConfig(r, common) : (common as C)
    r.done()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`vigil-${def.name}: ${err.message}\n`)
      process.exit(78) // EX_CONFIG
    }
    throw err
  }
  // Tracing from the standard OTEL_* variables (off when they are unset); flushed last at stop.
  const tracing = initTracing(def.name, { env })
  const log = createLogger(config)
  const metrics = new Metrics(def.name)
  const health = new HealthState()
  const lifecycle = new Lifecycle(log, config.shutdownTimeoutMs)
  lifecycle.handleSignals()
  if (tracing) {
    lifecycle.onStop('tracing', () => shutdownTracing())
    log.info(
      { endpoint: env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ?? env.OTEL_EXPORTER_OTLP_ENDPOINT },
      'tracing on (OTLP)',
    )
  }
  const kit: ServiceKit<C> = { config, log, metrics, health, lifecycle }
  try {
    const started = await def.start(kit)
    // With VIGIL_AUTH_JWKS_URL, user-facing RPCs need a token with the role USER_POLICY names.
    const authenticate = started.authenticate ?? (config.auth ? userAuthentication(config.auth) : undefined)
    const server = await startServer({ config, log, metrics, health, ...started, authenticate })
    lifecycle.onStop('server', () => server.close())
    health.markStarted()
    log.info({ url: server.url, services: server.services.map((s) => s.typeName) }, `${def.name} ready`)
    return { kit, server }
  } catch (err) {
    log.fatal({ err }, `${def.name} failed to start`)
    await lifecycle.shutdown('start failed')
    process.exitCode = 1
    throw err
  }
}
