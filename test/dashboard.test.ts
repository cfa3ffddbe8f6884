import assert from 'node:assert/strict'
import { existsSync, mkdirSync } from 'node:fs'
import { after, before, describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { type Browser, chromium, type Page } from 'playwright-core'
import { build } from 'vite'
import { type DevIssuer, startDevIssuer } from '../services/common/dev-issuer.js'
import { createLogger } from '../services/common/log.js'
import { connectNats, type NatsConnection, provisionBus } from '../services/common/nats.js'
import { type MosquittoFixture, startMosquitto } from './fixtures/mosquitto.js'
import { type NatsFixture, startNats } from './fixtures/nats.js'
import { freePort } from './fixtures/ports.js'
import { type Child, tempDir } from './fixtures/process.js'
import { type ServiceProcess, startService, startVigil } from './fixtures/services.js'

const log = createLogger({ service: 'cli', logLevel: 'silent' })
const BRIDGE = { username: 'vigil-bridge', password: 'dashboard-test-bridge' }
const shots = fileURLToPath(new URL('../test-results/', import.meta.url))
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p))

describe('dashboard in a real browser (Debian chromium) against the real stack', () => {
  let nats: NatsFixture
  let nc: NatsConnection
  let broker: MosquittoFixture
  let query: ServiceProcess
  let bridge: ServiceProcess
  let inference: ServiceProcess
  let simulator: Child
  let issuer: DevIssuer
  let queryEnv: Record<string, string>
  let browser: Browser
  let page: Page
  const dir = tempDir('dashboard')

  before(async () => {
    if (!CHROMIUM)
      throw new Error('chromium is not installed: npm test installs it (scripts/setup.sh --browser)')
    await build({
      configFile: fileURLToPath(new URL('../services/dashboard/vite.config.ts', import.meta.url)),
      logLevel: 'warn',
    })
    nats = await startNats()
    nc = await connectNats({ service: 'cli', natsUrl: nats.url }, log)
    await provisionBus(nc, log)
    broker = await startMosquitto([], { dynsec: BRIDGE })
    // Users sign in: the development issuer of `vigil up`, the services verifying its tokens.
    const queryPort = await freePort()
    issuer = await startDevIssuer({
      dataDir: dir.path,
      port: 0,
      dashboardUrl: `http://127.0.0.1:${queryPort}/`,
    })
    const common = {
      VIGIL_NATS_URL: nats.url,
      VIGIL_MQTT_DYNSEC: 'true',
      VIGIL_AUTH_JWKS_URL: issuer.jwksUrl,
      VIGIL_AUTH_ISSUER: issuer.url,
    }
    ;[bridge, inference] = await Promise.all([
      startService('bridge', {
        ...common,
        VIGIL_MQTT_URL: broker.url,
        VIGIL_MQTT_USERNAME: BRIDGE.username,
        VIGIL_MQTT_PASSWORD: BRIDGE.password,
      }),
      startService('inference', { ...common, VIGIL_BOOTSTRAP_ROWS: '200', VIGIL_INFERENCE_THREADS: '1' }),
    ])
    queryEnv = {
      ...common,
      VIGIL_DATA_DIR: dir.path,
      VIGIL_STORE_LINGER_MS: '100',
      VIGIL_INFERENCE_PUBLIC_URL: inference.url,
      VIGIL_AUTH_SIGN_IN_URL: issuer.signInUrl,
    }
    query = await startService('query', queryEnv, { port: queryPort })
    const operator = await issuer.key.mint({ subject: 'simulator', roles: ['operator'], ttlSeconds: 3_600 })
    simulator = startVigil(
      ['simulate', '--devices', '6', '--interval', '200ms', '--anomaly-rate', '0.05', '--prefix', 'web'],
      {
        VIGIL_QUERY_ADDR: query.url,
        VIGIL_MQTT_URL: broker.url,
        VIGIL_DATA_DIR: dir.path,
        VIGIL_TOKEN: operator,
      },
    )
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-dev-shm-usage'],
    })
    page = await browser.newPage({ viewport: { width: 1400, height: 900 } })
    mkdirSync(shots, { recursive: true })
  })
  after(async () => {
    await browser?.close()
    await simulator?.stop()
    await Promise.all([query?.stop(), bridge?.stop(), inference?.stop()])
    await broker?.stop()
    await nc?.drain()
    await nats?.stop()
    await issuer?.close()
    dir.remove()
  })

  it('asks to sign in, signs in on the issuer page and shows who is signed in', async () => {
    await page.goto(`${query.url}/#/fleet`)
    await page.waitForSelector('.sign-in a', { timeout: 30_000 })
    assert.equal(await page.$('.device-row'), null, 'nothing is shown before signing in')
    await page.click('.sign-in a')
    await page.waitForSelector('form[action="/sign-in"]')
    await page.fill('input[name="name"]', 'grace')
    await page.selectOption('select[name="role"]', 'admin')
    await page.click('button[type="submit"]')
    await page.waitForSelector('header .who strong', { timeout: 30_000 })
    assert.equal(await page.textContent('header .who strong'), 'grace')
    assert.match((await page.textContent('header .who')) ?? '', /\(admin\)/)
    assert.equal(new URL(page.url()).hash, '#/fleet', 'the token is taken out of the address bar')
  })

  it('lists the simulated devices on the fleet page, with live summary tiles', async () => {
    await page.goto(`${query.url}/#/fleet`)
    await page.waitForFunction(() => document.querySelectorAll('.device-row').length >= 6, null, {
      timeout: 60_000,
    })
    const ids = await page.$$eval('.device-row span:first-child', (els) => els.map((e) => e.textContent))
    assert.deepEqual(ids.filter((id) => id?.startsWith('web-')).sort(), [
      'web-0001',
      'web-0002',
      'web-0003',
      'web-0004',
      'web-0005',
      'web-0006',
    ])
    await page.waitForFunction(
      () => document.querySelector('.tile-value')?.textContent?.startsWith('6 /'),
      null,
      {
        timeout: 30_000,
      },
    )
    await page.screenshot({ path: `${shots}fleet.png`, fullPage: true })
  })

  it("draws a device's chart and adds new points live", async () => {
    await page.goto(`${query.url}/#/device/web-0001`)
    await page.waitForSelector('[data-state="live"]', { timeout: 30_000 })
    const count = async () => Number((await page.textContent('[data-testid="point-count"]'))?.split(' ')[0])
    await page.waitForFunction(
      () => Number(document.querySelector('[data-testid="point-count"]')?.textContent?.split(' ')[0]) > 0,
    )
    const before = await count()
    await page.waitForFunction(
      (n) =>
        Number(document.querySelector('[data-testid="point-count"]')?.textContent?.split(' ')[0]) > n + 3,
      before,
      { timeout: 30_000 },
    )
    assert.ok((await count()) > before)
    assert.ok(await page.$('.chart canvas'), 'uPlot drew a canvas')
    await page.screenshot({ path: `${shots}device.png`, fullPage: true })
  })

  it('shows an injected anomaly in the live feed, and opens its device at that moment', async () => {
    await page.goto(`${query.url}/#/anomalies`)
    await page.waitForSelector('[data-testid="anomaly-feed"] li', { timeout: 90_000 })
    const first = await page.textContent('[data-testid="anomaly-feed"] li')
    assert.match(first ?? '', /(WARN|ALERT)\s+web-\d{4}/)
    await page.screenshot({ path: `${shots}anomalies.png`, fullPage: true })
    await page.click('[data-testid="anomaly-feed"] li a')
    await page.waitForURL(/#\/device\/web-\d{4}\?at=\d+/)
    await page.waitForSelector('.chart canvas')
  })

  it('sends a command from the device page and shows the outcome', async () => {
    await page.goto(`${query.url}/#/device/web-0002`)
    await page.fill('input[aria-label="payload"]', '{"seconds": 0.2}')
    await page.click('button:text-is("Send")')
    await page
      .waitForSelector('[data-testid="command-result"]', { timeout: 20_000 })
      .catch(async (err: Error) => {
        throw new Error(`${err.message}\npage says: ${await page.textContent('main')}`)
      })
    const result = await page.textContent('[data-testid="command-result"]')
    assert.match(result ?? '', /ACKED.*intervalSeconds.*0\.2/)
    await page.screenshot({ path: `${shots}command.png`, fullPage: true })
  })

  it('lists the models with their aliases', async () => {
    await page.goto(`${query.url}/#/models`)
    await page.waitForSelector('[data-testid="models"] tbody tr', { timeout: 60_000 })
    const row = await page.textContent('[data-testid="models"] tbody tr')
    assert.match(row ?? '', /fleet\s*1\s*production/)
    await page.screenshot({ path: `${shots}models.png`, fullPage: true })
  })

  it('shows that a lost stream is reconnecting, and goes live again when the service is back', async () => {
    await page.goto(`${query.url}/#/device/web-0004`)
    await page.waitForSelector('[data-state="live"]', { timeout: 30_000 })
    const port = query.port
    await query.stop()
    await page.waitForSelector('[data-state="reconnecting"]', { timeout: 20_000 })
    query = await startService('query', queryEnv, { port })
    await page.waitForSelector('[data-state="live"]', { timeout: 30_000 })
  })

  it('says in words when the API refuses, and keeps working', async () => {
    await page.goto(`${query.url}/#/device/web-0003`)
    await page.fill('input[aria-label="payload"]', '{"seconds": 99999}')
    await page.click('button:text-is("Send")')
    await page.waitForSelector('[data-testid="command-result"]', { timeout: 20_000 })
    assert.match(
      (await page.textContent('[data-testid="command-result"]')) ?? '',
      /REJECTED.*seconds must be/,
    )
    await page.fill('input[aria-label="payload"]', 'not json')
    await page.click('button:text-is("Send")')
    await page.waitForSelector('[role="alert"]')
    assert.match((await page.textContent('[role="alert"]')) ?? '', /not JSON/)
  })
})
