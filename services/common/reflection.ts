import {
  create,
  type DescFile,
  type DescMessage,
  type DescService,
  fromBinary,
  toBinary,
} from '@bufbuild/protobuf'
import { FileDescriptorProtoSchema } from '@bufbuild/protobuf/wkt'
import type { ConnectRouter } from '@connectrpc/connect'
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionRequestSchema,
  type ServerReflectionResponse,
  ServerReflectionResponseSchema,
} from '../../gen/grpc/reflection/v1/reflection_pb.js'
import {
  ServerReflectionRequestSchema as AlphaRequestSchema,
  ServerReflectionResponseSchema as AlphaResponseSchema,
  ServerReflection as ServerReflectionAlpha,
} from '../../gen/grpc/reflection/v1alpha/reflection_pb.js'

// gRPC status codes used by reflection's ErrorResponse.
const NOT_FOUND = 5
const UNIMPLEMENTED = 12

/**
 * The descriptors a server exposes through reflection: its services' files and everything they
 * import, indexed by file name and by every fully-qualified symbol they declare.
 */
export class DescriptorIndex {
  private readonly files = new Map<string, DescFile>()
  private readonly symbols = new Map<string, DescFile>()
  readonly serviceNames: string[] = []

  constructor(services: DescService[]) {
    for (const service of services) {
      this.serviceNames.push(service.typeName)
      this.addFile(service.file)
    }
  }

  private addFile(file: DescFile): void {
    const name = file.proto.name
    if (this.files.has(name)) return
    this.files.set(name, file)
    for (const dep of file.dependencies) this.addFile(dep)
    for (const service of file.services) {
      this.symbols.set(service.typeName, file)
      for (const method of service.methods) this.symbols.set(`${service.typeName}.${method.name}`, file)
    }
    for (const e of file.enums) this.symbols.set(e.typeName, file)
    for (const ext of file.extensions) this.symbols.set(ext.typeName, file)
    const addMessage = (m: DescMessage) => {
      this.symbols.set(m.typeName, file)
      for (const e of m.nestedEnums) this.symbols.set(e.typeName, file)
      for (const n of m.nestedMessages) addMessage(n)
    }
    for (const m of file.messages) addMessage(m)
  }

  fileByName(name: string): DescFile | undefined {
    return this.files.get(name)
  }

  fileBySymbol(symbol: string): DescFile | undefined {
    return this.symbols.get(symbol.replace(/^\./, ''))
  }

  /** The file and its transitive imports, each serialized once, the file itself first. */
  serialized(file: DescFile): Uint8Array[] {
    const seen = new Set<string>()
    const out: Uint8Array[] = []
    const visit = (f: DescFile) => {
      if (seen.has(f.proto.name)) return
      seen.add(f.proto.name)
      out.push(toBinary(FileDescriptorProtoSchema, f.proto))
      for (const dep of f.dependencies) visit(dep)
    }
    visit(file)
    return out
  }
}

/** Answers one reflection request (v1 shapes; v1alpha is converted on the wire). */
export function answerReflection(
  index: DescriptorIndex,
  req: ServerReflectionRequest,
): ServerReflectionResponse {
  const base = { validHost: req.host, originalRequest: req }
  const files = (file: DescFile | undefined, what: string): ServerReflectionResponse =>
    file
      ? create(ServerReflectionResponseSchema, {
          ...base,
          messageResponse: {
            case: 'fileDescriptorResponse',
            value: { fileDescriptorProto: index.serialized(file) },
          },
        })
      : error(NOT_FOUND, `${what} not found`)
  const error = (errorCode: number, errorMessage: string) =>
    create(ServerReflectionResponseSchema, {
      ...base,
      messageResponse: { case: 'errorResponse', value: { errorCode, errorMessage } },
    })
  const m = req.messageRequest
  switch (m.case) {
    case 'listServices':
      return create(ServerReflectionResponseSchema, {
        ...base,
        messageResponse: {
          case: 'listServicesResponse',
          value: { service: index.serviceNames.map((name) => ({ name })) },
        },
      })
    case 'fileByFilename':
      return files(index.fileByName(m.value), `file "${m.value}"`)
    case 'fileContainingSymbol':
      return files(index.fileBySymbol(m.value), `symbol "${m.value}"`)
    case 'fileContainingExtension':
      return error(NOT_FOUND, `no extension ${m.value.extensionNumber} of "${m.value.containingType}"`)
    case 'allExtensionNumbersOfType':
      return index.fileBySymbol(m.value)
        ? create(ServerReflectionResponseSchema, {
            ...base,
            messageResponse: {
              case: 'allExtensionNumbersResponse',
              value: { baseTypeName: m.value, extensionNumber: [] },
            },
          })
        : error(NOT_FOUND, `type "${m.value}" not found`)
    default:
      return error(UNIMPLEMENTED, 'empty reflection request')
  }
}

/** Mounts grpc.reflection v1 and v1alpha over the given services (reflection lists itself too). */
export function reflectionRoutes(services: DescService[]) {
  const index = new DescriptorIndex([...services, ServerReflection, ServerReflectionAlpha])
  return (router: ConnectRouter) => {
    router.service(ServerReflection, {
      async *serverReflectionInfo(requests) {
        for await (const req of requests) yield answerReflection(index, req)
      },
    })
    router.service(ServerReflectionAlpha, {
      async *serverReflectionInfo(requests) {
        for await (const req of requests) {
          // v1alpha and v1 share field numbers, so the wire form converts one into the other.
          const v1 = fromBinary(ServerReflectionRequestSchema, toBinary(AlphaRequestSchema, req))
          yield fromBinary(
            AlphaResponseSchema,
            toBinary(ServerReflectionResponseSchema, answerReflection(index, v1)),
          )
        }
      },
    })
  }
}
