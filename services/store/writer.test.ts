import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { Registry } from 'prom-client'
import { createLogger } from '../common/log.js'
import { TableWriter } from './writer.js'

describe('store: TableWriter holds the consumer back by rows', () => {
  it('stops taking messages while enough rows wait, and lets them go as inserts take rows', async () => {
    const inserts: { rows: number; done: () => void }[] = []
    const writer = new TableWriter({
      table: 'telemetry',
      insert: (_table, _text, rows) => new Promise((resolve) => inserts.push({ rows, done: resolve })),
      log: createLogger({ service: 'store', logLevel: 'silent' }),
      registry: new Registry(),
      maxRows: 1_000,
      lingerMs: 60_000,
      maxWaitingRows: 2_500,
    })
    const written: Promise<void>[] = []
    const write = (n: number) => written.push(writer.write(`m-${written.length}`, 'x\n'.repeat(n), n))
    assert.equal(writer.room(), undefined)
    // 1,000 rows start an insert; 2,500 more wait behind it: no room until an insert takes some.
    for (let k = 0; k < 7; k++) write(500)
    assert.equal(inserts.length, 1)
    assert.equal(inserts[0]?.rows, 1_000)
    const room = writer.room()
    assert.ok(room, 'no room while 2,500 rows wait')
    let roomed = false
    void room.then(() => {
      roomed = true
    })
    await new Promise((r) => setImmediate(r))
    assert.equal(roomed, false)
    // The first insert ends: the next takes 1,000 rows at once, 1,500 wait, and the consumer goes on.
    inserts[0]?.done()
    await room
    assert.equal(inserts.length, 2)
    assert.equal(inserts[1]?.rows, 1_000)
    assert.equal(writer.room(), undefined)
    // Everything written is inserted in the end, each message's promise resolved after its insert.
    for (const i of [1, 2]) {
      inserts[i]?.done()
      await new Promise((r) => setImmediate(r))
    }
    // The last 500 rows linger (a minute here) unless flushed, as on shutdown.
    assert.equal(inserts.length, 3)
    writer.flush()
    inserts[3]?.done()
    await Promise.all(written)
    assert.deepEqual(
      inserts.map((i) => i.rows),
      [1_000, 1_000, 1_000, 500],
    )
  })
})
