import { readFileSync } from 'node:fs'

/** CPU seconds (user + system) and peak RSS of a process, from /proc. */
export function processUsage(pid: number): { cpuSeconds: number; peakRssMb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12])
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const hwm = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0)
  return { cpuSeconds: ticks / 100, peakRssMb: hwm / 1024 }
}
