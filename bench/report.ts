// What every benchmark suite prints with: lines, whole numbers with separators, percentiles.
export const say = (line: string) => process.stdout.write(`${line}\n`)
export const fmt = (n: number) => Math.round(n).toLocaleString('en-US')

/** The p-th percentile of ascending values (NaN when there are none). */
export const percentile = (sorted: number[], p: number) =>
  sorted.length === 0
    ? Number.NaN
    : (sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number)

export const median = (values: number[]) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  )
