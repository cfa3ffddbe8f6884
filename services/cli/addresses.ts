import { DEFAULT_PORTS, type EnvReader } from '../common/config.js'

/** Where the CLI finds a service: VIGIL_QUERY_ADDR / VIGIL_INFERENCE_ADDR, else this machine. */
export function serviceAddress(r: EnvReader, service: 'query' | 'inference'): string {
  const name = service === 'query' ? 'VIGIL_QUERY_ADDR' : 'VIGIL_INFERENCE_ADDR'
  return r.url(name, `http://127.0.0.1:${DEFAULT_PORTS[service]}`, ['http', 'https']) as string
}
