import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { fileURLToPath } from 'node:url'
import { startChild, tempDir } from './fixtures/process.js'

const cli = fileURLToPath(new URL('../services/cli/main.ts', import.meta.url))
const vigil = (args: string[], env: Record<string, string> = {}) =>
  startChild(process.execPath, ['--import', 'tsx', cli, ...args], { env: { ...process.env, ...env } })

describe('vigil CLI', () => {
  it('prints help naming its commands', async () => {
    const child = vigil(['help'])
    assert.equal(await child.exited, 0)
    assert.match(child.output(), /up \[--simulate N \| --no-simulate\]/)
  })

  it('refuses an unknown command with the help text', async () => {
    const child = vigil(['frobnicate'])
    assert.equal(await child.exited, 2)
    assert.match(child.output(), /unknown command "frobnicate"/)
  })

  it('up: says what is wrong with the data folder and how to fix it', async () => {
    // A folder below a plain file can never be created, even by root.
    const dir = tempDir('cli')
    const blocked = join(dir.path, 'a-file', 'data')
    writeFileSync(join(dir.path, 'a-file'), '')
    const child = vigil(['up'], { VIGIL_DATA_DIR: blocked })
    assert.equal(await child.exited, 1)
    dir.remove()
    assert.match(child.output(), new RegExp(`the data folder ${blocked} is not writable \\(ENOTDIR\\)`))
    assert.match(child.output(), /fix: set VIGIL_DATA_DIR to a folder you can write to/)
  })

  it('up: names a malformed variable', async () => {
    const child = vigil(['up'], { VIGIL_NATS_URL: 'http://nope' })
    assert.equal(await child.exited, 1)
    assert.match(child.output(), /VIGIL_NATS_URL: must use nats or tls, got "http:"/)
  })
})
