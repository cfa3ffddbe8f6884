// Fleet overview: summary tiles (refreshed every 5 s), and every device in a virtualized list with
// search, site and label filters, sorting and paging through the API.
import { durationFromMs } from '@bufbuild/protobuf/wkt'
import { useCallback, useEffect, useMemo, useRef, useState } from 'react'
import type { DeviceSummary, GetFleetSummaryResponse } from '../../../../gen/vigil/query/v1/query_pb.js'
import { describe, query, tsMs } from '../api.js'
import { ErrorBox, fmt, fmtTime } from './common.js'

const ROW = 34
const MAX_DEVICES = 10_000

export function FleetPage() {
  const [summary, setSummary] = useState<GetFleetSummaryResponse>()
  const [rows, setRows] = useState<DeviceSummary[]>([])
  const [error, setError] = useState<string>()
  const [search, setSearch] = useState('')
  const [site, setSite] = useState('')
  const [label, setLabel] = useState('')
  const [order, setOrder] = useState('device_id')
  const [scrollTop, setScrollTop] = useState(0)
  const list = useRef<HTMLDivElement>(null)

  useEffect(() => {
    let alive = true
    const load = () =>
      query
        .getFleetSummary({ window: durationFromMs(3600_000) })
        .then((s) => alive && setSummary(s))
        .catch((e) => alive && setError(describe(e)))
    void load()
    const timer = setInterval(load, 5_000)
    return () => {
      alive = false
      clearInterval(timer)
    }
  }, [])

  const loadDevices = useCallback(async () => {
    try {
      const all: DeviceSummary[] = []
      let pageToken = ''
      do {
        const res = await query.listDevices({
          pageSize: 1000,
          pageToken,
          search,
          site,
          label,
          orderBy: order,
        })
        all.push(...res.devices)
        pageToken = res.nextPageToken
      } while (pageToken && all.length < MAX_DEVICES)
      setRows(all)
      setError(undefined)
    } catch (e) {
      setError(describe(e))
    }
  }, [search, site, label, order])

  useEffect(() => {
    void loadDevices()
    const timer = setInterval(loadDevices, 10_000)
    return () => clearInterval(timer)
  }, [loadDevices])

  const sites = useMemo(() => [...new Set(rows.map((r) => r.site).filter(Boolean))].sort(), [rows])
  const height = 560
  const first = Math.max(0, Math.floor(scrollTop / ROW) - 5)
  const visible = rows.slice(first, first + Math.ceil(height / ROW) + 10)
  const labels = summary?.inferencesByLabel ?? {}

  return (
    <section>
      <div className="tiles">
        <Tile
          label="Devices online"
          value={`${summary?.devicesOnline ?? '—'} / ${summary?.devicesTotal ?? '—'}`}
        />
        <Tile label="Readings / s" value={fmt(summary?.readingsPerSecond ?? Number.NaN)} />
        <Tile label="WARN (1 h)" value={String(labels.WARN ?? 0)} tone="warn" />
        <Tile label="ALERT (1 h)" value={String(labels.ALERT ?? 0)} tone="alert" />
      </div>
      <ErrorBox error={error} />
      <div className="filters">
        <input
          placeholder="Search devices"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
          aria-label="search"
        />
        <select value={site} onChange={(e) => setSite(e.target.value)} aria-label="site">
          <option value="">All sites</option>
          {sites.map((s) => (
            <option key={s}>{s}</option>
          ))}
        </select>
        <select value={label} onChange={(e) => setLabel(e.target.value)} aria-label="label">
          <option value="">Any label</option>
          <option>OK</option>
          <option>WARN</option>
          <option>ALERT</option>
        </select>
        <select value={order} onChange={(e) => setOrder(e.target.value)} aria-label="sort">
          <option value="device_id">By id</option>
          <option value="-last_seen">Last seen first</option>
          <option value="-score">Highest score first</option>
        </select>
        <span className="count" data-testid="device-count">
          {rows.length} devices
        </span>
      </div>
      <div className="table-head row">
        <span>Device</span>
        <span>Site</span>
        <span>Firmware</span>
        <span>Status</span>
        <span>Label</span>
        <span>Score</span>
        <span>Last seen</span>
      </div>
      <div
        className="list"
        ref={list}
        style={{ height }}
        onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)}
      >
        <div style={{ height: rows.length * ROW, position: 'relative' }}>
          {visible.map((d, i) => (
            <a
              key={d.deviceId}
              className="row device-row"
              href={`#/device/${encodeURIComponent(d.deviceId)}`}
              style={{ position: 'absolute', top: (first + i) * ROW, height: ROW }}
            >
              <span>{d.deviceId}</span>
              <span>{d.site || '—'}</span>
              <span>{d.firmware || '—'}</span>
              <span className={d.online ? 'online' : 'offline'}>{d.online ? 'online' : 'offline'}</span>
              <span className={`label ${d.latestLabel}`}>{d.latestLabel || '—'}</span>
              <span>{fmt(d.latestScore, 2)}</span>
              <span>{fmtTime(tsMs(d.lastSeen))}</span>
            </a>
          ))}
        </div>
      </div>
    </section>
  )
}

function Tile({ label, value, tone }: { label: string; value: string; tone?: string }) {
  return (
    <div className={`tile ${tone ?? ''}`}>
      <div className="tile-value">{value}</div>
      <div className="tile-label">{label}</div>
    </div>
  )
}
