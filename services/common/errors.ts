import { create } from '@bufbuild/protobuf'
import { Code, ConnectError } from '@connectrpc/connect'
import { BadRequestSchema } from '../../gen/google/rpc/error_details_pb.js'

/** One broken rule: the field's path and what is wrong with it. */
export interface Violation {
  field: string
  description: string
}

/**
 * An InvalidArgument error whose message lists the violations and whose details carry them as
 * google.rpc.BadRequest, so gRPC and Connect clients can read them field by field.
 */
export function invalidArgument(what: string, violations: Violation[]): ConnectError {
  const summary = violations
    .slice(0, 5)
    .map((v) => `${v.field}: ${v.description}`)
    .join('; ')
  const more = violations.length > 5 ? ` (and ${violations.length - 5} more)` : ''
  return new ConnectError(`invalid ${what}: ${summary}${more}`, Code.InvalidArgument, undefined, [
    {
      desc: BadRequestSchema,
      value: create(BadRequestSchema, {
        fieldViolations: violations.map((v) => ({ field: v.field, description: v.description })),
      }),
    },
  ])
}

/** The violations carried by an error made with `invalidArgument`, for clients and tests. */
export function violationsOf(err: unknown): Violation[] {
  const connectErr = ConnectError.from(err)
  return connectErr
    .findDetails(BadRequestSchema)
    .flatMap((d) => d.fieldViolations.map((v) => ({ field: v.field, description: v.description })))
}
