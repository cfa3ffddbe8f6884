/** Options for a generated mosquitto configuration. */
export interface MosquittoOptions {
  port: number
  host?: string
  dataDir: string
  /** Lines appended as they are (listeners, TLS, plugins). */
  extra?: string[]
  /**
   * Dynamic security: no anonymous access, clients and roles from the plugin's file (written with
   * initialDynsecConfig when it does not exist yet; the plugin keeps it up to date afterwards).
   */
  dynsec?: { pluginPath: string; configFile: string }
  /** The listener speaks TLS only (MQTT over TLS, 8883 by convention); devices keep their passwords. */
  tls?: { certFile: string; keyFile: string; caFile: string }
}

/**
 * A mosquitto configuration for Vigil. The queue limits are raised on purpose: with mosquitto's
 * defaults a subscriber that falls behind silently loses QoS1 messages the broker had already
 * acknowledged to their publishers, which would break "no lost readings".
 */
export function mosquittoConfig(opts: MosquittoOptions): string {
  const lines = [
    'per_listener_settings false',
    `listener ${opts.port} ${opts.host ?? '127.0.0.1'}`,
    ...(opts.tls
      ? [
          `certfile ${opts.tls.certFile}`,
          `keyfile ${opts.tls.keyFile}`,
          `cafile ${opts.tls.caFile}`,
          'tls_version tlsv1.2',
          'require_certificate false',
        ]
      : []),
    ...(opts.dynsec
      ? [
          'allow_anonymous false',
          `plugin ${opts.dynsec.pluginPath}`,
          `plugin_opt_config_file ${opts.dynsec.configFile}`,
        ]
      : ['allow_anonymous true']),
    'persistence true',
    `persistence_location ${opts.dataDir.replace(/\/?$/, '/')}`,
    'autosave_interval 30',
    'max_inflight_messages 1000',
    'max_queued_messages 1000000',
    'max_queued_bytes 0',
    // Payloads up to 4 MiB reach the bridge, which keeps oversize ones (over 64 KiB) as dead letters;
    // larger packets are refused by the broker itself.
    'max_packet_size 4194304',
    'log_dest stdout',
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_timestamp_format %Y-%m-%dT%H:%M:%S',
    // mosquitto drops root privileges to the "mosquitto" user unless told to stay.
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    ...(opts.extra ?? []),
  ]
  return `${lines.join('\n')}\n`
}
