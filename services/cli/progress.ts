// Progress lines for long CLI work on stderr: one line rewritten in place on a terminal, a line
// every two seconds otherwise (logs, CI).

export class Progress {
  private label = ''
  private lastPrint = 0
  private readonly tty: boolean

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {
    this.tty = Boolean(out.isTTY)
  }

  /** Starts a step: "reading stored telemetry…". */
  step(label: string): void {
    this.label = label
    this.write(`${label}…`, true)
  }

  /** Reports a running count within the step. */
  count(n: number, unit: string): void {
    const now = Date.now()
    if (!this.tty && now - this.lastPrint < 2_000) return
    this.lastPrint = now
    this.write(`${this.label}… ${n.toLocaleString('en')} ${unit}`, this.tty)
  }

  /** Ends the step with a result line (nothing more when empty). */
  done(message: string): void {
    if (this.tty) this.out.write('\r\x1b[2K')
    if (message) this.out.write(`${message}\n`)
    this.label = ''
  }

  private write(text: string, inPlace: boolean): void {
    if (this.tty && inPlace) this.out.write(`\r\x1b[2K${text}`)
    else this.out.write(`${text}\n`)
  }
}
