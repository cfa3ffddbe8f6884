import { resolve } from 'node:path'
import type { DescService } from '@bufbuild/protobuf'
import { type Client, createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { DEFAULT_PORTS, type EnvReader } from '../common/config.js'
import { bearer, cliTokenSource } from '../common/credentials.js'

/** Where the CLI finds a service: VIGIL_QUERY_ADDR / VIGIL_INFERENCE_ADDR, else this machine. */
export function serviceAddress(r: EnvReader, service: 'query' | 'inference'): string {
  const name = service === 'query' ? 'VIGIL_QUERY_ADDR' : 'VIGIL_INFERENCE_ADDR'
  return r.url(name, `http://127.0.0.1:${DEFAULT_PORTS[service]}`, ['http', 'https']) as string
}

/**
 * A client of a Vigil service with the CLI's credentials (VIGIL_TOKEN / VIGIL_TOKEN_FILE, else the
 * development issuer of `vigil up` in VIGIL_DATA_DIR). Call it before `r.done()`.
 */
export function cliClient<S extends DescService>(r: EnvReader, service: S, baseUrl: string): Client<S> {
  const token = cliTokenSource(r, resolve(r.string('VIGIL_DATA_DIR', '.vigil')))
  // Over https: trust VIGIL_TLS_CA and, for services that ask for one, present VIGIL_TLS_CERT/KEY.
  const ca = r.file('VIGIL_TLS_CA')
  const cert = r.file('VIGIL_TLS_CERT')
  const key = r.file('VIGIL_TLS_KEY')
  return createClient(
    service,
    createConnectTransport({
      baseUrl,
      httpVersion: '1.1',
      interceptors: bearer(token),
      nodeOptions: { ...(ca ? { ca } : {}), ...(cert && key ? { cert, key } : {}) },
    }),
  )
}
