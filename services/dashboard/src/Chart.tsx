// Live time series with uPlot: one line per sensor, anomaly markers as points.
import { useEffect, useRef } from 'react'
import uPlot from 'uplot'
import 'uplot/dist/uPlot.min.css'

export interface ChartData {
  /** Times in seconds. */
  x: number[]
  series: { name: string; values: (number | null)[] }[]
  /** Anomaly markers: time (s) and label, drawn on the first series' scale. */
  markers: { t: number; label: string }[]
}

const COLORS = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#0891b2', '#dc2626', '#4b5563']

export function Chart({ data, height = 320 }: { data: ChartData; height?: number }) {
  const box = useRef<HTMLDivElement>(null)
  const plot = useRef<uPlot | null>(null)
  const shape = data.series.map((s) => s.name).join(',')

  // biome-ignore lint/correctness/useExhaustiveDependencies: rebuilt only when the sensors change
  useEffect(() => {
    if (!box.current) return
    const opts: uPlot.Options = {
      width: Math.max(200, (box.current.clientWidth || 800) - 16),
      height,
      series: [
        {},
        ...data.series.map((s, i) => ({
          label: s.name,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          scale: s.name,
        })),
        {
          label: 'anomaly',
          stroke: '#dc2626',
          fill: '#dc2626',
          paths: () => null,
          points: { show: true, size: 9 },
        },
      ],
      axes: [{}, ...data.series.slice(0, 1).map((s) => ({ scale: s.name }))],
      scales: { x: { time: true } },
    }
    plot.current = new uPlot(opts, toAligned(data), box.current)
    const resize = () =>
      plot.current?.setSize({ width: Math.max(200, (box.current?.clientWidth || 800) - 16), height })
    window.addEventListener('resize', resize)
    return () => {
      window.removeEventListener('resize', resize)
      plot.current?.destroy()
      plot.current = null
    }
  }, [shape, height])

  useEffect(() => {
    plot.current?.setData(toAligned(data))
  }, [data])

  return <div ref={box} className="chart" data-points={data.x.length} />
}

function toAligned(data: ChartData): uPlot.AlignedData {
  const marks = new Map(data.markers.map((m) => [m.t, m]))
  const first = data.series[0]?.values ?? []
  const markerValues = data.x.map((t, i) => (marks.has(t) ? (first[i] ?? null) : null))
  return [data.x, ...data.series.map((s) => s.values), markerValues] as uPlot.AlignedData
}
