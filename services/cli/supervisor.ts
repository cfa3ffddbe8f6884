import { type ChildProcess, spawn } from 'node:child_process'
import { createWriteStream, type WriteStream } from 'node:fs'
import { join } from 'node:path'

// Children still running when this process exits for any reason are killed with it.
const live = new Set<ChildProcess>()
process.once('exit', () => {
  for (const proc of live) proc.kill('SIGKILL')
})

export interface ChildSpec {
  name: string
  command: string
  args: string[]
  env?: NodeJS.ProcessEnv
  /** Folder for `<name>.log`, where the child's output goes. */
  logDir: string
}

/**
 * Runs one child process and keeps it running: a child that dies is reported and restarted with
 * exponential backoff (1 s doubling to 30 s, reset after a minute of uptime). `stop()` sends SIGTERM
 * and waits for the child to end by itself, with SIGKILL as a backstop.
 */
export class Supervised {
  private proc: ChildProcess | undefined
  private stopping = false
  private backoffMs = 1_000
  private startedAt = 0
  private restartTimer: NodeJS.Timeout | undefined
  private readonly log: WriteStream
  restarts = 0

  constructor(
    readonly spec: ChildSpec,
    private readonly report: (message: string) => void,
  ) {
    this.log = createWriteStream(join(spec.logDir, `${spec.name}.log`), { flags: 'a' })
  }

  get logFile(): string {
    return join(this.spec.logDir, `${this.spec.name}.log`)
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null
  }

  start(): void {
    this.startedAt = Date.now()
    const proc = spawn(this.spec.command, this.spec.args, {
      env: this.spec.env ?? process.env,
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: a terminal's Ctrl-C reaches only `vigil up`, which then stops the
      // children in order instead of having them all die at once and look like crashes.
      detached: true,
    })
    this.proc = proc
    live.add(proc)
    proc.once('exit', () => live.delete(proc))
    proc.stdout?.pipe(this.log, { end: false })
    proc.stderr?.pipe(this.log, { end: false })
    proc.once('error', (err) =>
      this.report(`${this.spec.name}: cannot start ${this.spec.command}: ${err.message}`),
    )
    proc.once('exit', (code, signal) => {
      if (this.stopping) return
      if (Date.now() - this.startedAt > 60_000) this.backoffMs = 1_000
      this.report(
        `${this.spec.name} exited (${signal ?? `code ${code}`}); restarting in ${this.backoffMs / 1000}s — see ${this.logFile}`,
      )
      this.restarts++
      this.restartTimer = setTimeout(() => this.start(), this.backoffMs)
      this.backoffMs = Math.min(this.backoffMs * 2, 30_000)
    })
  }

  async stop(timeoutMs = 20_000): Promise<void> {
    this.stopping = true
    clearTimeout(this.restartTimer)
    const proc = this.proc
    if (proc && this.running) {
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
      proc.kill('SIGTERM')
      const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs)
      await exited
      clearTimeout(timer)
    }
    await new Promise<void>((resolve) => this.log.end(resolve))
  }
}
