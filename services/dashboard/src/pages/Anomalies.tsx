// Anomalies across the fleet: the last 24 hours from ListAnomalies, new ones live from Watch.
import { timestampFromMs } from '@bufbuild/protobuf/wkt'
import { useEffect, useState } from 'react'
import type { Inference } from '../../../../gen/vigil/telemetry/v1/telemetry_pb.js'
import { describe, query, tsMs } from '../api.js'
import { type LiveState, watchLive } from '../live.js'
import { ErrorBox, fmt, fmtTime, LiveBadge } from './common.js'

export function AnomaliesPage() {
  const [items, setItems] = useState<Inference[]>([])
  const [minLabel, setMinLabel] = useState('WARN')
  const [site, setSite] = useState('')
  const [error, setError] = useState<string>()
  const [live, setLive] = useState<{ state: LiveState; detail?: string }>({ state: 'connecting' })

  useEffect(() => {
    let alive = true
    query
      .listAnomalies({ start: timestampFromMs(Date.now() - 86_400_000), minLabel, site, pageSize: 200 })
      .then((res) => alive && setItems(res.anomalies))
      .catch((e) => alive && setError(describe(e)))
    const stop = watchLive(
      { inferences: true },
      (e) => {
        if (e.event.case !== 'inference') return
        const inf = e.event.value as Inference
        if (inf.label === 'OK' || (minLabel === 'ALERT' && inf.label !== 'ALERT')) return
        setItems((prev) => [inf, ...prev.filter((p) => p.eventId !== inf.eventId)].slice(0, 500))
      },
      (state, detail) => setLive({ state, detail }),
    )
    return () => {
      alive = false
      stop()
    }
  }, [minLabel, site])

  return (
    <section>
      <h1>
        Anomalies <LiveBadge state={live.state} detail={live.detail} />
      </h1>
      <ErrorBox error={error} />
      <div className="filters">
        <select value={minLabel} onChange={(e) => setMinLabel(e.target.value)} aria-label="minimum label">
          <option value="WARN">WARN and ALERT</option>
          <option value="ALERT">ALERT only</option>
        </select>
        <input placeholder="Site" value={site} onChange={(e) => setSite(e.target.value)} aria-label="site" />
        <span className="count">{items.length} anomalies</span>
      </div>
      <ul className="anomalies feed" data-testid="anomaly-feed">
        {items.map((a) => (
          <li key={a.eventId}>
            <a href={`#/device/${encodeURIComponent(a.deviceId)}?at=${tsMs(a.ts)}`}>
              <span className={`label ${a.label}`}>{a.label}</span> <strong>{a.deviceId}</strong>{' '}
              {fmtTime(tsMs(a.ts))} score {fmt(a.score, 2)} —{' '}
              {a.explain?.shapTop.map((c) => `${c.name} ${Math.round(c.contribution * 100)}%`).join(', ')}
            </a>
          </li>
        ))}
      </ul>
    </section>
  )
}
