// The dashboard's shell: navigation and hash routes (#/fleet, #/device/<id>, #/anomalies, #/models).
import { useEffect, useState } from 'react'
import { dashboardConfig, type SignedIn, signedIn, signOut } from './api.js'
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
  const [user, setUser] = useState<SignedIn | undefined>(signedIn)
  const [auth, setAuth] = useState<{ required: boolean; signInUrl?: string }>()
  useEffect(() => {
    dashboardConfig().then(
      (c) => setAuth(c.auth),
      () => setAuth({ required: false }),
    )
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
        {auth?.required && (
          <span className="who">
            {user ? (
              <>
                Signed in as <strong>{user.name}</strong> ({user.roles.join(', ') || 'no role'}){' '}
                <button
                  type="button"
                  onClick={() => {
                    signOut()
                    setUser(undefined)
                  }}
                >
                  Sign out
                </button>
              </>
            ) : (
              <a href={auth.signInUrl ?? '#'}>Sign in</a>
            )}
          </span>
        )}
      </header>
      <main>
        {auth?.required && !user ? (
          <p className="sign-in">
            The services require you to sign in.{' '}
            {auth.signInUrl ? (
              <a href={auth.signInUrl}>Sign in</a>
            ) : (
              'Ask your administrator how to get a token.'
            )}
          </p>
        ) : route.page === 'device' && route.id ? (
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
