// The bare connect-node ceiling for a trivial unary RPC: EchoService on a plain HTTP/2 server with
// connectNodeAdapter, none of Vigil's server stack (no interceptors, metrics, health, sniffing).
import { createServer } from 'node:http2'
import { connectNodeAdapter } from '@connectrpc/connect-node'
import { EchoService } from '../gen/vigil/kit/v1/kit_pb.js'

const port = Number(process.env.VIGIL_PORT)
const server = createServer(
  connectNodeAdapter({
    routes: (router) => router.service(EchoService, { echo: (req) => ({ message: req.message }) }),
  }),
)
server.listen(port, '127.0.0.1', () => process.stdout.write(`listening on ${port}\n`))
process.on('SIGTERM', () => server.close(() => process.exit(0)))
