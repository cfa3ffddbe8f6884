// The dashboard's shell: navigation and hash routes (#/fleet, #/device/<id>, #/anomalies, #/models).
import { useEffect, useState } from 'react'
import { AnomaliesPage } from './pages/Anomalies.js'
import { DevicePage } from './pages/Device.js'
import { FleetPage } from './pages/Fleet.js'
import { ModelsPage } from './pages/Models.js'

function parse(hash: string): { page: string; id?: string; params: URLSearchParams } {
  const [path = '', qs = ''] = hash.replace(/^#\/?/, '').split('?')
  const [page = 'fleet', id] = path.split('/')
  return {
    page: page || 'fleet',
    id: id ? decodeURIComponent(id) : undefined,
    params: new URLSearchParams(qs),
  }
}

export function App() {
  const [route, setRoute] = useState(() => parse(window.location.hash))
  useEffect(() => {
    const onHash = () => setRoute(parse(window.location.hash))
    window.addEventListener('hashchange', onHash)
    return () => window.removeEventListener('hashchange', onHash)
  }, [])
  const link = (page: string, label: string) => (
    <a href={`#/${page}`} className={route.page === page ? 'active' : ''}>
      {label}
    </a>
  )
  return (
    <>
      <header>
        <strong>Vigil</strong>
        <nav>
          {link('fleet', 'Fleet')}
          {link('anomalies', 'Anomalies')}
          {link('models', 'Models')}
        </nav>
      </header>
      <main>
        {route.page === 'device' && route.id ? (
          <DevicePage key={route.id} deviceId={route.id} atMs={Number(route.params.get('at')) || undefined} />
        ) : route.page === 'anomalies' ? (
          <AnomaliesPage />
        ) : route.page === 'models' ? (
          <ModelsPage />
        ) : (
          <FleetPage />
        )}
      </main>
    </>
  )
}
