import { accessSync, constants, existsSync, mkdirSync } from 'node:fs'
import { delimiter, join } from 'node:path'
import { isPortFree } from '../common/net.js'

/** A prerequisite that is not met, with the one thing to do about it. */
export class MissingPrerequisite extends Error {
  constructor(
    what: string,
    readonly fix: string,
  ) {
    super(what)
    this.name = 'MissingPrerequisite'
  }
}

/** The path of an executable on PATH (or in the extra folders), or undefined. */
export function findExecutable(
  name: string,
  extraDirs: string[] = ['/usr/sbin', '/usr/local/sbin'],
): string | undefined {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), ...extraDirs]) {
    if (!dir) continue
    const candidate = join(dir, name)
    try {
      accessSync(candidate, constants.X_OK)
      return candidate
    } catch {}
  }
  return undefined
}

/** Creates the data folder when needed and checks it can be written. */
export function ensureWritableDir(path: string): void {
  try {
    if (!existsSync(path)) mkdirSync(path, { recursive: true })
    accessSync(path, constants.W_OK)
  } catch (err) {
    throw new MissingPrerequisite(
      `the data folder ${path} is not writable (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`,
      'set VIGIL_DATA_DIR to a folder you can write to',
    )
  }
}

/** Fails when something already listens on the port. */
export async function ensurePortFree(
  port: number,
  host: string,
  who: string,
  envHint: string,
): Promise<void> {
  if (!(await isPortFree(port, host))) {
    throw new MissingPrerequisite(
      `port ${port} on ${host} is already in use (wanted for ${who})`,
      `stop what uses it, or ${envHint}`,
    )
  }
}
