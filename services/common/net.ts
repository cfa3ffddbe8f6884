import net, { type AddressInfo } from 'node:net'

/** A TCP port that was free a moment ago on the host. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.unref()
    server.once('error', reject)
    server.listen(0, host, () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** Whether nothing listens on the port now. */
export function isPortFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen(port, host, () => server.close(() => resolve(true)))
  })
}

/**
 * Resolves once something accepts TCP connections on the port; rejects after `timeoutMs`, or as
 * soon as `alive()` says the process that should listen has exited.
 */
export async function waitForPort(
  port: number,
  opts: { host?: string; timeoutMs?: number; alive?: () => boolean } = {},
): Promise<void> {
  const host = opts.host ?? '127.0.0.1'
  const timeoutMs = opts.timeoutMs ?? 15_000
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (opts.alive && !opts.alive())
      throw new Error(`the process for ${host}:${port} exited before it listened`)
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, host)
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`nothing listened on ${host}:${port} within ${timeoutMs} ms`)
}
