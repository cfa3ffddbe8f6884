// The dashboard's chart under load, for `npm run bench -- dashboard`: the same Chart component the
// device page uses, with N points (?points=100000), then live appends; results on window.benchResult.
import { useEffect, useState } from 'react'
import { createRoot } from 'react-dom/client'
import { Chart, type ChartData } from './Chart.js'

const params = new URLSearchParams(window.location.search)
const N = Number(params.get('points') ?? 100_000)
const APPEND_FRAMES = 120
const PER_FRAME = 50

function series(n: number, t0: number): ChartData {
  const x = Array.from({ length: n }, (_, i) => t0 + i)
  const values = x.map((_, i) => 20 + Math.sin(i / 300) * 5 + Math.random())
  return {
    x,
    series: [{ name: 'temperature', values }],
    markers: [{ t: t0 + Math.floor(n / 2), label: 'ALERT' }],
  }
}

declare global {
  interface Window {
    benchResult?: { initialRenderMs: number; appendFrameMs: number[]; points: number }
  }
}

function Bench() {
  const [data, setData] = useState<ChartData>(() => series(N, 1_700_000_000))
  useEffect(() => {
    const started = performance.now()
    requestAnimationFrame(() => {
      const initialRenderMs = performance.now() - started
      const frames: number[] = []
      let last = performance.now()
      let frame = 0
      const tick = () => {
        const now = performance.now()
        if (frame > 0) frames.push(now - last)
        last = now
        if (frame++ >= APPEND_FRAMES) {
          window.benchResult = { initialRenderMs, appendFrameMs: frames, points: N }
          return
        }
        setData((prev) => {
          const t = (prev.x.at(-1) ?? 0) + 1
          const x = [...prev.x.slice(PER_FRAME), ...Array.from({ length: PER_FRAME }, (_, i) => t + i)]
          const values = [
            ...(prev.series[0]?.values ?? []).slice(PER_FRAME),
            ...Array.from({ length: PER_FRAME }, () => 20 + Math.random()),
          ]
          return { x, series: [{ name: 'temperature', values }], markers: prev.markers }
        })
        requestAnimationFrame(tick)
      }
      requestAnimationFrame(tick)
    })
  }, [])
  return <Chart data={data} height={400} />
}

const root = document.getElementById('root')
if (root) createRoot(root).render(<Bench />)
