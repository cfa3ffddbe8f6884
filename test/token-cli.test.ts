import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import { createLocalJWKSet, jwtVerify } from 'jose'
import { DevKey } from '../services/common/dev-issuer.js'
import { tempDir } from './fixtures/process.js'
import { startVigil } from './fixtures/services.js'

describe('vigil token: tokens from the development issuer for scripts and programs', () => {
  const dir = tempDir('token-cli')
  after(() => dir.remove())
  const env = { VIGIL_DATA_DIR: dir.path }

  it('says to run vigil up first when there is no issuer', async () => {
    const child = startVigil(['token'], env)
    assert.equal(await child.exited, 1)
    assert.match(child.output(), /no development issuer in .*run "vigil up"/)
  })

  it('prints a token with the roles, subject and lifetime asked for, signed by the issuer key', async () => {
    const key = await DevKey.open(dir.path)
    key.setIssuer('http://127.0.0.1:18090')
    const child = startVigil(
      ['token', '--role', 'service', '--role', 'viewer', '--subject', 'line-7', '--ttl', '15m'],
      env,
    )
    assert.equal(await child.exited, 0, child.output())
    const jwt = child.output().trim()
    const { payload } = await jwtVerify(jwt, createLocalJWKSet(key.jwks()), {
      issuer: 'http://127.0.0.1:18090',
      audience: 'vigil',
    })
    assert.equal(payload.sub, 'line-7')
    assert.deepEqual(payload.roles, ['service', 'viewer'])
    assert.equal(Number(payload.exp) - Number(payload.iat), 900)
  })

  it('refuses unknown roles and lifetimes out of range', async () => {
    for (const args of [
      ['--role', 'root'],
      ['--ttl', '90d'],
      ['--ttl', 'soon'],
      ['--subject', '../x y'],
    ]) {
      const child = startVigil(['token', ...args], env)
      assert.equal(await child.exited, 2, args.join(' '))
      assert.match(child.output(), /vigil token: /)
    }
  })
})
