import type { LiveState } from '../live.js'

export function ErrorBox({ error }: { error: string | undefined }) {
  return error ? (
    <div className="error" role="alert">
      {error}
    </div>
  ) : null
}

export function LiveBadge({ state, detail }: { state: LiveState; detail?: string }) {
  const text = state === 'live' ? 'live' : state === 'connecting' ? 'connecting…' : 'reconnecting…'
  return (
    <span className={`live ${state}`} title={detail} data-state={state}>
      {text}
    </span>
  )
}

export const fmtTime = (ms: number) => (ms ? new Date(ms).toLocaleString() : '—')
export const fmt = (n: number, digits = 1) => (Number.isFinite(n) ? n.toFixed(digits) : '—')
