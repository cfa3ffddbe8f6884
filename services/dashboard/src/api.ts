// Clients for the APIs the dashboard calls, over Connect-Web from the page's own origin (the query
// service serves the app); the inference service's address comes from /dashboard-config.json.
import { type Client, ConnectError, createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-web'
import { DeviceService } from '../../../gen/vigil/device/v1/device_pb.js'
import { InferenceService } from '../../../gen/vigil/inference/v1/inference_pb.js'
import { QueryService } from '../../../gen/vigil/query/v1/query_pb.js'

const transport = createConnectTransport({ baseUrl: window.location.origin, useBinaryFormat: true })
export const query: Client<typeof QueryService> = createClient(QueryService, transport)
export const devices: Client<typeof DeviceService> = createClient(DeviceService, transport)

let inferenceClient: Promise<Client<typeof InferenceService>> | undefined
/** The inference service's client (its address from the query service's dashboard config). */
export function inference(): Promise<Client<typeof InferenceService>> {
  inferenceClient ??= fetch('./dashboard-config.json')
    .then((r) => r.json() as Promise<{ inferenceUrl: string }>)
    .then(({ inferenceUrl }) =>
      createClient(
        InferenceService,
        createConnectTransport({ baseUrl: inferenceUrl, useBinaryFormat: true }),
      ),
    )
  return inferenceClient
}

/** An API error in words for people: the message, and what to do for the common codes. */
export function describe(err: unknown): string {
  const e = ConnectError.from(err)
  const hint: Record<number, string> = {
    14: 'the service is not reachable; it may be restarting',
    5: 'not found',
    3: 'the request was refused',
  }
  return `${e.rawMessage}${hint[e.code] && !e.rawMessage.includes(hint[e.code] as string) ? ` (${hint[e.code]})` : ''}`
}

export const tsMs = (ts: { seconds: bigint; nanos: number } | undefined) =>
  ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : 0
