// `vigil devices add|list|show|update|revoke`: the device registry through DeviceService.
import { parseArgs } from 'node:util'
import { timestampDate } from '@bufbuild/protobuf/wkt'
import { Code, ConnectError } from '@connectrpc/connect'
import { type Device, DeviceService, DeviceStatus } from '../../gen/vigil/device/v1/device_pb.js'
import { DEFAULT_PORTS, EnvReader } from '../common/config.js'
import { violationsOf } from '../common/errors.js'
import { cliClient, serviceAddress } from './addresses.js'
import { printTable } from './table.js'

export const DEVICES_HELP = `vigil devices — the device registry

Usage:
  vigil devices add ID [--site SITE] [--label KEY=VALUE ...]   register; prints the MQTT password once
  vigil devices list [--site SITE] [--revoked]                 registered devices
  vigil devices show ID                                        one device
  vigil devices update ID [--site SITE] [--label KEY=VALUE ...] change its site or (all) labels
  vigil devices revoke ID                                      disconnect it and refuse it from now on

Environment: VIGIL_QUERY_ADDR (default http://127.0.0.1:${DEFAULT_PORTS.query}).
`

export async function devices(argv: string[]): Promise<number> {
  const { values: flags, positionals } = parseArgs({
    args: argv,
    options: {
      site: { type: 'string' },
      label: { type: 'string', multiple: true },
      revoked: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
    allowPositionals: true,
  })
  const [sub, id] = positionals
  if (flags.help || !sub) {
    process.stdout.write(DEVICES_HELP)
    return flags.help ? 0 : 2
  }
  const labels: Record<string, string> = {}
  for (const l of flags.label ?? []) {
    const at = l.indexOf('=')
    if (at <= 0) return usage(`--label wants KEY=VALUE, got "${l}"`)
    labels[l.slice(0, at)] = l.slice(at + 1)
  }
  const r = new EnvReader()
  const addr = serviceAddress(r, 'query')
  const client = cliClient(r, DeviceService, addr)
  r.done()
  const out = (line: string) => process.stdout.write(`${line}\n`)
  try {
    switch (sub) {
      case 'add': {
        if (!id) return usage('add needs a device id')
        const res = await client.registerDevice({ deviceId: id, site: flags.site ?? '', labels })
        out(`registered ${res.device?.deviceId}${res.device?.site ? ` (site ${res.device.site})` : ''}`)
        out(`  MQTT username: ${res.credentials?.username}`)
        out(`  MQTT password: ${res.credentials?.password}`)
        out('The password is shown this once and stored only as a salted hash: put it on the device now.')
        return 0
      }
      case 'list': {
        const all: Device[] = []
        let pageToken = ''
        do {
          const res = await client.listDevices({
            site: flags.site ?? '',
            status: flags.revoked ? DeviceStatus.REVOKED : DeviceStatus.UNSPECIFIED,
            pageSize: 1000,
            pageToken,
          })
          all.push(...res.devices)
          pageToken = res.nextPageToken
        } while (pageToken)
        if (all.length === 0) {
          out('no devices registered')
          return 0
        }
        printTable(
          ['DEVICE', 'SITE', 'STATUS', 'LABELS', 'CREATED'],
          all.map((d) => [d.deviceId, d.site || '-', statusOf(d), labelsOf(d), created(d)]),
          out,
        )
        return 0
      }
      case 'show': {
        if (!id) return usage('show needs a device id')
        show((await client.getDevice({ deviceId: id })).device, out)
        return 0
      }
      case 'update': {
        if (!id) return usage('update needs a device id')
        const res = await client.updateDevice({
          deviceId: id,
          site: flags.site,
          labels,
          replaceLabels: flags.label !== undefined,
        })
        show(res.device, out)
        return 0
      }
      case 'revoke': {
        if (!id) return usage('revoke needs a device id')
        const res = await client.revokeDevice({ deviceId: id })
        out(`revoked ${res.device?.deviceId}: it is disconnected and refused from now on`)
        return 0
      }
      default:
        return usage(`unknown subcommand "${sub}"`)
    }
  } catch (err) {
    const e = ConnectError.from(err)
    const details = violationsOf(e)
      .map((v) => `\n  ${v.field}: ${v.description}`)
      .join('')
    const hint = e.code === Code.Unavailable ? ' (is the query service running? set VIGIL_QUERY_ADDR)' : ''
    process.stderr.write(`vigil devices ${sub}: ${e.rawMessage}${hint}${details}\n`)
    return 1
  }
}

function usage(problem: string): number {
  process.stderr.write(`vigil devices: ${problem}\n\n${DEVICES_HELP}`)
  return 2
}

const statusOf = (d: Device) => (d.status === DeviceStatus.REVOKED ? 'revoked' : 'active')
const labelsOf = (d: Device) =>
  Object.entries(d.labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(',') || '-'
const created = (d: Device) => (d.createdAt ? timestampDate(d.createdAt).toISOString() : '')

function show(d: Device | undefined, out: (line: string) => void): void {
  if (!d) return
  out(d.deviceId)
  out(`  site      ${d.site || '-'}`)
  out(`  status    ${statusOf(d)}`)
  out(`  labels    ${labelsOf(d)}`)
  out(`  username  ${d.username}`)
  out(`  created   ${created(d)}`)
  if (d.updatedAt) out(`  updated   ${timestampDate(d.updatedAt).toISOString()}`)
}
