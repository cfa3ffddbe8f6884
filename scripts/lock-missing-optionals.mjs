// The npm registry reachable here lacks some platform builds that dependencies list as optional
// (chdb's macOS and linux-arm64 libraries, for example). `npm install` then leaves them out of
// package-lock.json and `npm ci` refuses the lock. This adds an entry for each such package,
// restricted to its platform, so `npm ci` skips it on other platforms. Run after `npm install`.
import { readFileSync, writeFileSync } from 'node:fs'

const path = new URL('../package-lock.json', import.meta.url)
const lock = JSON.parse(readFileSync(path, 'utf8'))
const packages = lock.packages
const OS = ['darwin', 'linux', 'win32', 'freebsd']
const CPU = ['x64', 'arm64', 'ia32', 'arm']
let added = 0
for (const [key, entry] of Object.entries(packages)) {
  for (const [name, version] of Object.entries(entry.optionalDependencies ?? {})) {
    const target = `node_modules/${name}`
    if (packages[target]) continue
    const tokens = name.split(/[/-]/)
    const os = OS.find((o) => tokens.includes(o))
    const cpu = CPU.find((c) => tokens.includes(c))
    if (!os || !cpu) {
      console.warn(`lock: ${name} (optional for ${key || 'root'}) is missing and not platform-specific`)
      continue
    }
    const entry = { version, optional: true, os: [os], cpu: [cpu] }
    if (os === 'linux' && tokens.includes('gnu')) entry.libc = ['glibc']
    if (os === 'linux' && tokens.includes('musl')) entry.libc = ['musl']
    packages[target] = entry
    added++
  }
}
const sorted = Object.fromEntries(
  Object.entries(packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : 1)),
)
lock.packages = sorted
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`)
console.log(`lock: ${added} platform-specific optional packages added`)
