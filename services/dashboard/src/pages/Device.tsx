// One device: live chart of every sensor (history from QueryRange, new points from Watch), anomaly
// markers, the latest inference with its explanation, recent anomalies, and commands.
import { durationFromMs, timestampFromMs } from '@bufbuild/protobuf/wkt'
import { useEffect, useMemo, useState } from 'react'
import { type Command, CommandState } from '../../../../gen/vigil/device/v1/device_pb.js'
import type { Inference, Reading } from '../../../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { describe, devices, query, tsMs } from '../api.js'
import { Chart, type ChartData } from '../Chart.js'
import { type LiveState, watchLive } from '../live.js'
import { ErrorBox, fmt, fmtTime, LiveBadge } from './common.js'

const WINDOWS = [
  { label: '15 min', ms: 15 * 60_000, stepMs: 0 },
  { label: '1 h', ms: 3600_000, stepMs: 0 },
  { label: '6 h', ms: 6 * 3600_000, stepMs: 60_000 },
  { label: '24 h', ms: 86_400_000, stepMs: 5 * 60_000 },
  { label: '7 days', ms: 7 * 86_400_000, stepMs: 30 * 60_000 },
  { label: '30 days', ms: 30 * 86_400_000, stepMs: 2 * 3600_000 },
]
const MAX_POINTS = 100_000

interface Points {
  times: number[]
  values: Map<string, (number | null)[]>
  markers: { t: number; label: string }[]
}

export function DevicePage({ deviceId, atMs }: { deviceId: string; atMs?: number }) {
  const [windowIndex, setWindowIndex] = useState(atMs ? 1 : 0)
  const [points, setPoints] = useState<Points>({ times: [], values: new Map(), markers: [] })
  const [latest, setLatest] = useState<Inference>()
  const [anomalies, setAnomalies] = useState<Inference[]>([])
  const [live, setLive] = useState<{ state: LiveState; detail?: string }>({ state: 'connecting' })
  const [error, setError] = useState<string>()
  const w = WINDOWS[windowIndex] ?? WINDOWS[0]!

  useEffect(() => {
    let alive = true
    const end = atMs ? atMs + w.ms / 2 : Date.now()
    const start = end - w.ms
    query
      .queryRange({
        deviceId,
        start: timestampFromMs(start),
        end: timestampFromMs(end),
        step: w.stepMs ? durationFromMs(w.stepMs) : undefined,
      })
      .then((res) => {
        if (!alive) return
        const times = new Set<number>()
        for (const s of res.series) for (const p of s.points) times.add(tsMs(p.ts))
        const sorted = [...times].sort((a, b) => a - b)
        const index = new Map(sorted.map((t, i) => [t, i]))
        const values = new Map<string, (number | null)[]>()
        for (const s of res.series) {
          const column = new Array<number | null>(sorted.length).fill(null)
          for (const p of s.points) column[index.get(tsMs(p.ts)) as number] = w.stepMs ? p.avg : p.value
          values.set(s.sensor, column)
        }
        setPoints((prev) => ({ times: sorted.map((t) => t / 1000), values, markers: prev.markers }))
      })
      .catch((e) => alive && setError(describe(e)))
    query
      .listAnomalies({ deviceId, start: timestampFromMs(start), end: timestampFromMs(end), pageSize: 20 })
      .then((res) => {
        if (!alive) return
        setAnomalies(res.anomalies)
        setPoints((prev) => ({
          ...prev,
          markers: res.anomalies.map((a) => ({ t: tsMs(a.ts) / 1000, label: a.label })),
        }))
      })
      .catch((e) => alive && setError(describe(e)))
    query
      .getLatest({ deviceId })
      .then((res) => alive && res.inference && setLatest(res.inference))
      .catch(() => undefined)
    return () => {
      alive = false
    }
  }, [deviceId, w, atMs])

  useEffect(() => {
    if (atMs) return // a moment in the past: no live points
    return watchLive(
      { deviceIds: [deviceId], readings: true, inferences: true },
      (e) => {
        if (e.event.case === 'reading') setPoints((prev) => appendReading(prev, e.event.value as Reading))
        if (e.event.case === 'inference') {
          const inf = e.event.value as Inference
          setLatest(inf)
          if (inf.label !== 'OK') {
            setAnomalies((prev) => [inf, ...prev].slice(0, 20))
            setPoints((prev) => ({
              ...prev,
              markers: [...prev.markers, { t: tsMs(inf.ts) / 1000, label: inf.label }],
            }))
          }
        }
      },
      (state, detail) => setLive({ state, detail }),
    )
  }, [deviceId, atMs])

  // One chart per sensor (their units and ranges differ), anomaly markers on each.
  const charts: ChartData[] = useMemo(
    () =>
      [...points.values].map(([name, values]) => ({
        x: points.times,
        series: [{ name, values }],
        markers: points.markers,
      })),
    [points],
  )

  return (
    <section>
      <h1>
        {deviceId} {!atMs && <LiveBadge state={live.state} detail={live.detail} />}
      </h1>
      <ErrorBox error={error} />
      <div className="filters">
        {WINDOWS.map((win, i) => (
          <button
            key={win.label}
            type="button"
            className={i === windowIndex ? 'active' : ''}
            onClick={() => setWindowIndex(i)}
          >
            {win.label}
          </button>
        ))}
        <span className="count" data-testid="point-count">
          {points.times.length} points
        </span>
      </div>
      <div className="charts">
        {charts.map((c) => (
          <div key={c.series[0]?.name}>
            <h3>{c.series[0]?.name}</h3>
            <Chart data={c} height={150} />
          </div>
        ))}
      </div>
      <div className="columns">
        <div className="panel">
          <h2>Latest inference</h2>
          {latest ? (
            <div data-testid="latest-inference">
              <p>
                <span className={`label ${latest.label}`}>{latest.label}</span> score {fmt(latest.score, 3)} ·
                model {latest.model?.name} v{latest.model?.version} · {fmtTime(tsMs(latest.ts))}
              </p>
              <h3>Top contributing features</h3>
              {latest.explain?.shapTop.map((c) => (
                <div key={c.name} className="bar">
                  <span>{c.name}</span>
                  <span className="bar-fill" style={{ width: `${Math.round(c.contribution * 100)}%` }} />
                  <span>{Math.round(c.contribution * 100)}%</span>
                </div>
              ))}
            </div>
          ) : (
            <p>No inference yet.</p>
          )}
          <h2>Recent anomalies</h2>
          <ul className="anomalies" data-testid="device-anomalies">
            {anomalies.map((a) => (
              <li key={a.eventId}>
                <span className={`label ${a.label}`}>{a.label}</span> {fmtTime(tsMs(a.ts))} —{' '}
                {a.anomalies.map((x) => `${x.name} (${x.severity})`).join(', ') ||
                  a.explain?.shapTop[0]?.name}
              </li>
            ))}
          </ul>
        </div>
        <CommandPanel deviceId={deviceId} />
      </div>
    </section>
  )
}

function appendReading(prev: Points, r: Reading): Points {
  const t = tsMs(r.ts) / 1000
  const times = [...prev.times, t]
  const values = new Map(prev.values)
  const names = new Set([...values.keys(), ...Object.keys(r.sensors)])
  for (const name of names) {
    const column = [...(values.get(name) ?? new Array<number | null>(prev.times.length).fill(null))]
    column.push(r.sensors[name] ?? null)
    values.set(name, column)
  }
  const drop = Math.max(0, times.length - MAX_POINTS)
  if (drop > 0) for (const [k, v] of values) values.set(k, v.slice(drop))
  return { times: drop > 0 ? times.slice(drop) : times, values, markers: prev.markers }
}

function CommandPanel({ deviceId }: { deviceId: string }) {
  const [name, setName] = useState('set-interval')
  const [payload, setPayload] = useState('{"seconds": 2}')
  const [result, setResult] = useState<Command>()
  const [error, setError] = useState<string>()
  const [busy, setBusy] = useState(false)
  const send = async () => {
    setError(undefined)
    setResult(undefined)
    let body: Record<string, unknown>
    try {
      body = payload.trim() ? JSON.parse(payload) : {}
    } catch {
      setError('The payload is not JSON.')
      return
    }
    setBusy(true)
    try {
      const res = await devices.sendCommand({ deviceId, name, payload: body as never, queueIfOffline: false })
      setResult(res.command)
    } catch (e) {
      setError(describe(e))
    } finally {
      setBusy(false)
    }
  }
  return (
    <div className="panel">
      <h2>Send a command</h2>
      <div className="filters">
        <select value={name} onChange={(e) => setName(e.target.value)} aria-label="command">
          <option>set-interval</option>
          <option>reboot</option>
          <option>set-threshold</option>
        </select>
        <input value={payload} onChange={(e) => setPayload(e.target.value)} aria-label="payload" />
        <button type="button" onClick={send} disabled={busy}>
          {busy ? 'Sending…' : 'Send'}
        </button>
      </div>
      <ErrorBox error={error} />
      {result && (
        <p data-testid="command-result">
          <strong>{CommandState[result.state]}</strong> {result.result ? JSON.stringify(result.result) : ''}{' '}
          {result.history.at(-1)?.detail}
        </p>
      )}
    </div>
  )
}
