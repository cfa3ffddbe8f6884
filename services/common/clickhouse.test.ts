import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { Code, ConnectError } from '@connectrpc/connect'
import { openTestClickHouse } from '../../test/fixtures/clickhouse.js'
import {
  type ClickHouse,
  type Migration,
  migrate,
  quoteIdent,
  readFailure,
  readSettings,
  toDateTime64,
} from './clickhouse.js'
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

  it("runs users' reads read-only and bounded, enforced by ClickHouse, with errors a caller can act on", async () => {
    await migrate(ch, MIGRATIONS, log)
    const limits = { maxExecutionSeconds: 1, maxResultRows: 1_000 }
    const read = async (query: string) => {
      try {
        const res = await ch.client.query({
          query: query + readSettings(limits, false),
          format: 'JSONEachRow',
        })
        return await res.json()
      } catch (err) {
        throw readFailure(err, limits)
      }
    }
    assert.equal((await read('SELECT number FROM numbers(10)')).length, 10)
    for (const sql of [
      `INSERT INTO ${ch.table('readings')} (device_id, ts, event_id) VALUES ('x', now(), 'e')`,
      `DROP TABLE ${ch.table('readings')}`,
      `ALTER TABLE ${ch.table('readings')} DELETE WHERE 1`,
      `CREATE TABLE ${ch.table('evil')} (a UInt8) ENGINE = Memory`,
    ]) {
      await assert.rejects(read(sql), (err: Error) => /readonly/i.test(err.message), sql)
    }
    await assert.rejects(read('SELECT number FROM numbers(5000)'), (err: ConnectError) => {
      assert.ok(err instanceof ConnectError)
      assert.equal(err.code, Code.ResourceExhausted)
      assert.match(err.rawMessage, /exceed 1000 rows/)
      return true
    })
    await assert.rejects(
      read('SELECT count() FROM numbers_mt(1e12) WHERE sipHash64(number) = 1'),
      (err: ConnectError) => {
        assert.ok(err instanceof ConnectError, String(err))
        assert.equal(err.code, Code.DeadlineExceeded)
        return true
      },
    )
    // The limits hold for those queries only: the writer sharing the session still writes.
    await ch.client.insert({
      table: ch.table('readings'),
      values: [{ device_id: 'after', ts: toDateTime64(Date.now()), event_id: 'e1', sensors: {} }],
      format: 'JSONEachRow',
    })
    const rows = await (
      await ch.client.query({
        query: `SELECT count() AS n FROM ${ch.table('readings')} WHERE device_id = 'after'`,
        format: 'JSONEachRow',
      })
    ).json<{ n: string }>()
    assert.equal(Number(rows[0]?.n), 1)
  })
})
