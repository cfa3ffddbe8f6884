import type { Logger } from './log.js'

type Stopper = () => Promise<void> | void

/**
 * One per process: SIGTERM or SIGINT aborts `signal`, then the registered stoppers run in reverse
 * order of registration (servers stop accepting and finish in-flight calls before the clients they
 * use are drained). The process then ends by itself once nothing holds the event loop; the timer
 * is only a backstop against a stopper that hangs.
 */
export class Lifecycle {
  private readonly controller = new AbortController()
  private readonly stoppers: { name: string; stop: Stopper }[] = []
  private stopping: Promise<void> | undefined

  constructor(
    private readonly log: Logger,
    private readonly timeoutMs: number,
  ) {}

  /** Aborted when the process starts shutting down. */
  get signal(): AbortSignal {
    return this.controller.signal
  }

  /** Registers something to stop at shutdown; later registrations stop first. */
  onStop(name: string, stop: Stopper): void {
    this.stoppers.push({ name, stop })
  }

  /** Starts shutting down on SIGTERM and SIGINT (a second signal exits at once). */
  handleSignals(): void {
    const onSignal = (sig: NodeJS.Signals) => {
      if (this.stopping) {
        this.log.warn({ signal: sig }, 'second signal: exiting now')
        process.exit(130)
      }
      void this.shutdown(`signal ${sig}`)
    }
    process.on('SIGTERM', onSignal)
    process.on('SIGINT', onSignal)
  }

  /** Stops everything registered, once; later calls return the same promise. */
  shutdown(reason: string): Promise<void> {
    this.stopping ??= this.run(reason)
    return this.stopping
  }

  private async run(reason: string): Promise<void> {
    this.log.info({ reason }, 'shutting down')
    this.controller.abort(new Error(`shutting down: ${reason}`))
    const backstop = setTimeout(() => {
      this.log.error({ timeoutMs: this.timeoutMs }, 'shutdown took too long: exiting')
      process.exit(1)
    }, this.timeoutMs)
    backstop.unref()
    for (const { name, stop } of [...this.stoppers].reverse()) {
      try {
        await stop()
        this.log.debug({ component: name }, 'stopped')
      } catch (err) {
        this.log.error({ err, component: name }, 'stop failed')
        process.exitCode = 1
      }
    }
    clearTimeout(backstop)
    this.log.info('stopped')
  }
}
