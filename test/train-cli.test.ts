import assert from 'node:assert/strict'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { create } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { jetstream } from '@nats-io/jetstream'
import { InferenceService } from '../gen/vigil/inference/v1/inference_pb.js'
import { QueryService } from '../gen/vigil/query/v1/query_pb.js'
import { ReadingSchema } from '../gen/vigil/telemetry/v1/telemetry_pb.js'
import { encodeReadingBatch } from '../services/common/codec.js'
import { createLogger } from '../services/common/log.js'
import { connectNats, type NatsConnection, provisionBus, rawSubject } from '../services/common/nats.js'
import { readSpec } from '../services/inference/model/onnx.js'
import { normalReading, Rng, syntheticFleet } from '../services/inference/model/synthetic.js'
import { eventually } from './fixtures/bus.js'
import { type NatsFixture, startNats } from './fixtures/nats.js'
import { startChild, tempDir } from './fixtures/process.js'
import { type ServiceProcess, startService } from './fixtures/services.js'

const cli = fileURLToPath(new URL('../services/cli/main.ts', import.meta.url))
const log = createLogger({ service: 'cli', logLevel: 'silent' })

describe('vigil train and vigil models against the real services', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let inference: ServiceProcess
  let query: ServiceProcess
  const dir = tempDir('train')
  const fleet = syntheticFleet(4, 8)
  const rng = new Rng(9)
  let env: Record<string, string>
  const vigil = async (args: string[]) => {
    const child = startChild(process.execPath, ['--import', 'tsx', cli, ...args], {
      env: { ...process.env, ...env },
    })
    const code = await child.exited
    return { code, output: child.output() }
  }

  before(async () => {
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    ;[inference, query] = await Promise.all([
      startService('inference', {
        VIGIL_NATS_URL: nats.url,
        VIGIL_BOOTSTRAP_ROWS: '0',
        VIGIL_INFERENCE_WORKER: 'false',
      }),
      startService('query', {
        VIGIL_NATS_URL: nats.url,
        VIGIL_DATA_DIR: dir.path,
        VIGIL_STORE_LINGER_MS: '50',
      }),
    ])
    env = { VIGIL_NATS_URL: nats.url, VIGIL_INFERENCE_ADDR: inference.url, VIGIL_QUERY_ADDR: query.url }
  })
  after(async () => {
    await Promise.all([inference?.stop(), query?.stop()])
    await nc?.drain()
    await nats?.stop()
    dir.remove()
  })

  it('trains a device model from a JSON Lines file, skipping lines that are not readings, and promotes it', async () => {
    const device = fleet[0]!
    const lines = Array.from({ length: 300 }, (_, i) =>
      JSON.stringify({
        deviceId: device.id,
        ts: new Date(Date.UTC(2026, 10, 1) + i * 60_000).toISOString(),
        sensors: normalReading(device, rng),
      }),
    )
    lines.splice(10, 0, '{not json', '')
    lines.push(JSON.stringify({ deviceId: 'someone-else', sensors: normalReading(fleet[1]!, rng) }))
    const file = join(dir.path, 'readings.jsonl')
    writeFileSync(file, `${lines.join('\n')}\n`)
    const out = join(dir.path, 'model.onnx')
    const first = await vigil(['train', '--device', device.id, '--file', file, '--promote', '--out', out])
    assert.equal(first.code, 0, first.output)
    assert.match(first.output, /300 readings of device dev-0001/)
    assert.match(first.output, /skipped 1 line\(s\) that are not readings:\n\s+line 11: not JSON/)
    assert.match(
      first.output,
      /trained device-dev-0001: 6 features \(current, humidity, pressure, temperature, vibration, voltage\)/,
    )
    assert.match(first.output, /stored device-dev-0001 v1 in the registry/)
    assert.match(first.output, /production of device-dev-0001 now v1/)
    assert.equal(readSpec(new Uint8Array(readFileSync(out))).scopeKey, device.id)

    const client = createClient(
      InferenceService,
      createConnectTransport({ baseUrl: inference.url, httpVersion: '1.1' }),
    )
    const scored = await client.infer({ deviceId: device.id, features: normalReading(device, rng) })
    assert.equal(scored.model?.name, 'device-dev-0001')

    const list = await vigil(['models', 'list'])
    assert.equal(list.code, 0, list.output)
    assert.match(list.output, /NAME\s+VERSION\s+ALIASES/)
    assert.match(list.output, /device-dev-0001\s+1\s+production\s+device dev-0001\s+6\s+300\s+file:/)
    const show = await vigil(['models', 'show', 'device-dev-0001'])
    assert.match(show.output, /limits\s+Q [\d.]+, T² [\d.]+ at 0.999/)

    const second = await vigil(['train', '--device', device.id, '--file', file, '--promote'])
    assert.match(second.output, /production of device-dev-0001 now v2 \(was v1\)/)
    const back = await vigil(['models', 'rollback', 'device-dev-0001'])
    assert.equal(back.code, 0, back.output)
    assert.match(back.output, /production of device-dev-0001 back to v1 \(was v2\)/)
    const missing = await vigil(['models', 'promote', 'device-dev-0001', '9'])
    assert.equal(missing.code, 1)
    assert.match(missing.output, /model device-dev-0001 v9 does not exist/)
  })

  it('trains a fleet model from stored telemetry read through the query service', async () => {
    const t0 = Date.now() - 3600_000
    let n = 0
    for (const device of fleet) {
      const readings = Array.from({ length: 150 }, (_, i) =>
        create(ReadingSchema, {
          eventId: `${device.id}:seq:${i}`,
          deviceId: device.id,
          ts: timestampFromMs(t0 + i * 10_000),
          sensors: normalReading(device, rng),
          meta: { site: device.site },
          seq: BigInt(i),
          receivedAt: timestampFromMs(Date.now()),
        }),
      )
      n += readings.length
      await jetstream(nc).publish(
        rawSubject(n % 4),
        encodeReadingBatch(`tb-${device.id}`, readings, 'test'),
        {
          msgID: `tb-${device.id}`,
        },
      )
    }
    const q = createClient(QueryService, createConnectTransport({ baseUrl: query.url, httpVersion: '1.1' }))
    await eventually(
      async () => (await q.listDevices({})).devices.length === fleet.length,
      30_000,
      'the readings stored',
    )
    await eventually(
      async () => {
        let count = 0
        for await (const c of q.exportReadings({ start: timestampFromMs(t0 - 1000) }))
          count += c.readings.length
        return count === n
      },
      30_000,
      'every reading stored',
    )
    const res = await vigil(['train', '--since', '2h'])
    assert.equal(res.code, 0, res.output)
    assert.match(res.output, new RegExp(`${n} readings of the fleet`))
    assert.match(res.output, /stored fleet v1/)
    assert.match(res.output, /promote it with: vigil models promote fleet 1/)
    const site = await vigil([
      'train',
      '--site',
      fleet[0]!.site,
      '--since',
      '2h',
      '--promote',
      '--alias',
      'canary',
    ])
    assert.equal(site.code, 0, site.output)
    assert.match(site.output, /canary of site-site-1 now v1/)
    const empty = await vigil(['train', '--device', 'nobody', '--since', '2h'])
    assert.equal(empty.code, 1)
    assert.match(empty.output, /no stored readings of device nobody in that window/)
  })
})
