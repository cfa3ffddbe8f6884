/** Prints rows as aligned columns under a header. */
export function printTable(head: string[], rows: string[][], out: (line: string) => void): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)))
  const line = (cells: string[]) =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd()
  out(line(head))
  for (const r of rows) out(line(r))
}
