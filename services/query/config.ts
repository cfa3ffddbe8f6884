import { DEFAULT_READ_LIMITS, type ReadLimits } from '../common/clickhouse.js'
import { type CommonConfig, DEFAULT_PORTS, type EnvReader } from '../common/config.js'
import { defaultDashboardDir } from '../dashboard/serve.js'
import { readStoreConfig, type StoreConfig } from '../store/config.js'

export interface QueryConfig extends StoreConfig {
  /** A device seen within this window counts as online. */
  onlineWindowMs: number
  /**
   * Whether this process also runs the store's writer. Required with embedded ClickHouse, whose
   * data folder only one process may open; off by default with a ClickHouse server.
   */
  runWriter: boolean
  /** The broker uses dynamic security: a registration waits until a bridge gave the device its account. */
  mqttDynsec: boolean
  /** The built dashboard served at `/`. */
  dashboardDir: string
  /** Where browsers reach the inference service (the dashboard's model panel). */
  inferencePublicUrl: string
  /** Where the dashboard sends people to sign in when authentication is on. */
  signInUrl?: string
  /** What one query for a user's request may cost. */
  readLimits: ReadLimits
  /** A read-only ClickHouse user for users' queries (server mode); else the store's user, with readonly set per query. */
  clickhouseReadUser?: string
  clickhouseReadPassword: string
}

/** The query service's own variables (see README.md). */
export function readQueryConfig(r: EnvReader, common: CommonConfig): QueryConfig {
  const store = readStoreConfig(r, common)
  const embedded = common.clickhouseUrl === undefined
  const runWriter = r.bool('VIGIL_QUERY_RUNS_WRITER', embedded)
  if (embedded && !runWriter) {
    r.problem('VIGIL_QUERY_RUNS_WRITER: must be true with embedded ClickHouse (only one process may open it)')
  }
  const readUser = r.optionalString('VIGIL_CLICKHOUSE_READ_USER')
  if (readUser && embedded)
    r.problem('VIGIL_CLICKHOUSE_READ_USER: needs VIGIL_CLICKHOUSE_URL (embedded ClickHouse has no users)')
  return {
    ...store,
    onlineWindowMs: r.int('VIGIL_ONLINE_WINDOW_MS', 300_000, 1_000, 86_400_000),
    runWriter,
    mqttDynsec: r.bool('VIGIL_MQTT_DYNSEC', false),
    dashboardDir: r.string('VIGIL_DASHBOARD_DIR', defaultDashboardDir()),
    inferencePublicUrl: r.url(
      'VIGIL_INFERENCE_PUBLIC_URL',
      r.optionalString('VIGIL_INFERENCE_ADDR') ?? `http://127.0.0.1:${DEFAULT_PORTS.inference}`,
      ['http', 'https'],
    ) as string,
    signInUrl: r.url('VIGIL_AUTH_SIGN_IN_URL', undefined, ['http', 'https']),
    readLimits: {
      maxExecutionSeconds: r.int(
        'VIGIL_QUERY_MAX_EXECUTION_SECONDS',
        DEFAULT_READ_LIMITS.maxExecutionSeconds,
        1,
        3_600,
      ),
      maxResultRows: r.int('VIGIL_QUERY_MAX_RESULT_ROWS', DEFAULT_READ_LIMITS.maxResultRows, 1_000, 1e9),
    },
    clickhouseReadUser: readUser,
    clickhouseReadPassword: r.string('VIGIL_CLICKHOUSE_READ_PASSWORD', ''),
  }
}
