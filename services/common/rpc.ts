import { Code, ConnectError } from '@connectrpc/connect'

/** The gRPC name of an error's code in snake case (`invalid_argument`), as metrics and logs show it. */
export function codeName(err: unknown): string {
  const code = err instanceof ConnectError ? err.code : Code.Unknown
  return Code[code].replace(/([a-z])([A-Z])/g, '$1_$2').toLowerCase()
}

/**
 * Wraps a response stream so `onEnd` runs once when it ends: with undefined when it completed,
 * with the error when it failed or the consumer stopped early.
 */
export async function* wrapStreamEnd<T>(
  messages: AsyncIterable<T>,
  onEnd: (err: unknown) => void,
  mapError: (err: unknown) => unknown = (err) => err,
): AsyncGenerator<T> {
  let outcome: { err: unknown } | undefined
  try {
    for await (const m of messages) yield m
    outcome = { err: undefined }
  } catch (err) {
    const mapped = mapError(err)
    outcome = { err: mapped }
    throw mapped
  } finally {
    onEnd(outcome ? outcome.err : new ConnectError('stream cancelled', Code.Canceled))
  }
}
