import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { openTestClickHouse } from '../../test/fixtures/clickhouse.js'
import { type ClickHouse, type Migration, migrate, quoteIdent, toDateTime64 } from './clickhouse.js'
import { createLogger } from './log.js'

const log = createLogger({ service: 'store', logLevel: 'silent' })

const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: 'readings',
    statements: [
      `CREATE TABLE IF NOT EXISTS {db}.readings (
        device_id LowCardinality(String), ts DateTime64(3, 'UTC'), event_id String,
        sensors Map(LowCardinality(String), Float64)
      ) ENGINE = ReplacingMergeTree ORDER BY (device_id, ts, event_id) PARTITION BY toDate(ts)`,
    ],
  },
  {
    version: 2,
    name: 'readings site',
    statements: [`ALTER TABLE {db}.readings ADD COLUMN IF NOT EXISTS site LowCardinality(String) DEFAULT ''`],
  },
]

describe('clickhouse (embedded chdb unless VIGIL_TEST_CLICKHOUSE_URL is set)', () => {
  let ch: ClickHouse

  before(async () => {
    ch = await openTestClickHouse()
  })
  after(() => ch?.close())

  it('applies migrations in order, once, and records them', async () => {
    assert.deepEqual(await migrate(ch, [MIGRATIONS[1]!, MIGRATIONS[0]!], log), [1, 2])
    assert.deepEqual(await migrate(ch, MIGRATIONS, log), [])
    const ledger = await (
      await ch.client.query({
        query: `SELECT version, name FROM ${ch.table('schema_migrations')} FINAL ORDER BY version`,
        format: 'JSONEachRow',
      })
    ).json<{ version: number; name: string }>()
    assert.deepEqual(ledger, [
      { version: 1, name: 'readings' },
      { version: 2, name: 'readings site' },
    ])
  })

  it('stores typed rows and folds duplicates by event id with FINAL', async () => {
    await migrate(ch, MIGRATIONS, log)
    const row = {
      device_id: 'abc-123',
      ts: toDateTime64(Date.parse('2025-08-26T12:34:56.789Z')),
      event_id: 'e1',
      sensors: { temp: 26.1 },
      site: 'HYD-PLANT-2',
    }
    await ch.client.insert({ table: ch.table('readings'), values: [row, row], format: 'JSONEachRow' })
    const rows = await (
      await ch.client.query({
        query: `SELECT device_id, toString(ts) AS ts, sensors['temp'] AS temp, site FROM ${ch.table('readings')} FINAL`,
        format: 'JSONEachRow',
      })
    ).json()
    assert.deepEqual(rows, [
      { device_id: 'abc-123', ts: '2025-08-26 12:34:56.789', temp: 26.1, site: 'HYD-PLANT-2' },
    ])
  })

  it('refuses a migration that changed after it was applied', async () => {
    await migrate(ch, MIGRATIONS, log)
    const changed = [MIGRATIONS[0]!, { ...MIGRATIONS[1]!, statements: ['SELECT 1'] }]
    await assert.rejects(
      migrate(ch, changed, log),
      /migration 2 \(readings site\) changed after it was applied/,
    )
  })

  it('is safe when two starts migrate at once', async () => {
    const third: Migration = {
      version: 3,
      name: 'events',
      statements: [`CREATE TABLE IF NOT EXISTS {db}.events (id String) ENGINE = MergeTree ORDER BY id`],
    }
    await Promise.all([migrate(ch, [...MIGRATIONS, third], log), migrate(ch, [...MIGRATIONS, third], log)])
    const count = await (
      await ch.client.query({
        query: `SELECT count() AS n FROM ${ch.table('schema_migrations')} FINAL WHERE version = 3`,
        format: 'JSONEachRow',
      })
    ).json<{ n: string | number }>()
    assert.equal(Number(count[0]?.n), 1)
  })

  it('quotes identifiers', () => {
    assert.equal(quoteIdent('a`b'), '`a\\`b`')
  })
})
