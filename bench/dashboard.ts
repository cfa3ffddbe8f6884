// `npm run bench -- dashboard [--devices N] [--points N]`: how the dashboard holds up, in Debian's
// chromium against the query service (embedded ClickHouse, real nats-server):
//   1. the fleet page with N devices (default 5,000): time until every device is listed, and the
//      frame times while scrolling the virtualized list from top to bottom;
//   2. the device chart with N points (default 100,000): first render, and frame times while new
//      points stream in (50 per frame, the oldest dropped).
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { create } from '@bufbuild/protobuf'
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { createClient } from '@connectrpc/connect'
import { createConnectTransport } from '@connectrpc/connect-node'
import { jetstream } from '@nats-io/jetstream'
import { chromium } from 'playwright-core'
import { build } from 'vite'
import { QueryService } from '../gen/vigil/query/v1/query_pb.js'
import { ReadingSchema } from '../gen/vigil/telemetry/v1/telemetry_pb.js'
import { encodeReadingBatch } from '../services/common/codec.js'
import { createLogger } from '../services/common/log.js'
import { connectNats, provisionBus, rawSubject } from '../services/common/nats.js'
import { startNats } from '../test/fixtures/nats.js'
import { tempDir } from '../test/fixtures/process.js'
import { startService } from '../test/fixtures/services.js'
import { say } from './report.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })
const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? 0
}

export async function benchDashboard(opts: { devices: number; points: number }): Promise<void> {
  const executablePath = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p))
  if (!executablePath) throw new Error('chromium is not installed (sudo apt-get install chromium)')
  await build({
    configFile: fileURLToPath(new URL('../services/dashboard/vite.config.ts', import.meta.url)),
    logLevel: 'warn',
  })
  const nats = await startNats()
  const nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
  await provisionBus(nc, log)
  const dir = tempDir('bench-dashboard')
  const query = await startService('query', {
    VIGIL_NATS_URL: nats.url,
    VIGIL_DATA_DIR: dir.path,
    VIGIL_LOG_LEVEL: 'warn',
  })
  const browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
  try {
    // A fleet of N devices: one reading each.
    const js = jetstream(nc)
    const now = Date.now()
    for (let start = 0; start < opts.devices; start += 500) {
      const readings = Array.from({ length: Math.min(500, opts.devices - start) }, (_, i) => {
        const d = start + i
        return create(ReadingSchema, {
          eventId: `bd-${d}:seq:1`,
          deviceId: `bd-${String(d).padStart(5, '0')}`,
          ts: timestampFromMs(now - (d % 600) * 1000),
          sensors: { temperature: 20 + (d % 13), humidity: 40 + (d % 7) },
          meta: { site: `site-${d % 20}`, fw: '1.4.2' },
          seq: 1n,
          receivedAt: timestampFromMs(now),
        })
      })
      await js.publish(rawSubject(start % 16), encodeReadingBatch(`bd-${start}`, readings, 'bench'), {
        msgID: `bd-${start}`,
      })
    }
    const client = createClient(
      QueryService,
      createConnectTransport({ baseUrl: query.url, httpVersion: '1.1' }),
    )
    for (let i = 0; ; i++) {
      if ((await client.getFleetSummary({})).devicesTotal >= BigInt(opts.devices)) break
      if (i > 600) throw new Error('the devices were not stored in time')
      await new Promise((r) => setTimeout(r, 500))
    }
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
    const t0 = performance.now()
    await page.goto(`${query.url}/#/fleet`)
    await page.waitForFunction(
      (n) => document.querySelector('[data-testid="device-count"]')?.textContent === `${n} devices`,
      opts.devices,
      { timeout: 120_000 },
    )
    const listed = performance.now() - t0
    const frames = await page.evaluate(async () => {
      const list = document.querySelector('.list') as HTMLElement
      const times: number[] = []
      const steps = 60
      for (let i = 1; i <= steps; i++) {
        const t = performance.now()
        list.scrollTop = (list.scrollHeight * i) / steps
        await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))
        times.push(performance.now() - t)
      }
      return { times, rows: document.querySelectorAll('.device-row').length }
    })
    say(`dashboard benchmark (Debian chromium ${browser.version()}, headless)`)
    say(
      `  fleet page, ${opts.devices.toLocaleString('en-US')} devices: listed in ${listed.toFixed(0)} ms; ` +
        `scrolling top to bottom: frame p50 ${quantile(frames.times, 0.5).toFixed(1)} ms, p99 ${quantile(frames.times, 0.99).toFixed(1)} ms ` +
        `(${frames.rows} rows in the DOM at a time)`,
    )
    const chartPage = await browser.newPage({ viewport: { width: 1400, height: 900 } })
    await chartPage.goto(`${query.url}/bench.html?points=${opts.points}`)
    await chartPage.waitForFunction(() => window.benchResult !== undefined, null, { timeout: 120_000 })
    const result = (await chartPage.evaluate(() => window.benchResult)) as {
      initialRenderMs: number
      appendFrameMs: number[]
    }
    say(
      `  chart, ${opts.points.toLocaleString('en-US')} points: first render ${result.initialRenderMs.toFixed(0)} ms; ` +
        `live appends (50 points a frame): frame p50 ${quantile(result.appendFrameMs, 0.5).toFixed(1)} ms, ` +
        `p99 ${quantile(result.appendFrameMs, 0.99).toFixed(1)} ms`,
    )
  } finally {
    await browser.close()
    await query.stop()
    await nc.drain()
    await nats.stop()
    dir.remove()
  }
}

declare global {
  interface Window {
    benchResult?: { initialRenderMs: number; appendFrameMs: number[]; points: number }
  }
}
