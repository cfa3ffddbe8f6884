import { Code, ConnectError } from '@connectrpc/connect'

/** A reading JetStream did not store in time: the client may retry (the event id makes it safe). */
export function storeFailed(err: unknown): never {
  throw new ConnectError(
    `the reading was not stored: ${(err as Error).message}; retry with the same event id`,
    Code.Unavailable,
  )
}
