// Models: every version with its aliases; promote a version or roll an alias back.
import { timestampDate } from '@bufbuild/protobuf/wkt'
import { useCallback, useEffect, useState } from 'react'
import type { ListModelsResponse } from '../../../../gen/vigil/inference/v1/inference_pb.js'
import { describe, inference } from '../api.js'
import { ErrorBox } from './common.js'

export function ModelsPage() {
  const [data, setData] = useState<ListModelsResponse>()
  const [error, setError] = useState<string>()
  const [done, setDone] = useState<string>()
  const load = useCallback(async () => {
    try {
      setData(await (await inference()).listModels({}))
    } catch (e) {
      setError(describe(e))
    }
  }, [])
  useEffect(() => {
    void load()
  }, [load])
  const act = async (work: () => Promise<string>) => {
    setError(undefined)
    try {
      setDone(await work())
      await load()
    } catch (e) {
      setError(describe(e))
    }
  }
  return (
    <section>
      <h1>Models</h1>
      {data?.bootstrap && data.bootstrap.state !== 'done' && <p className="note">{data.bootstrap.message}</p>}
      <ErrorBox error={error} />
      {done && <p className="note">{done}</p>}
      <table data-testid="models">
        <thead>
          <tr>
            <th>Model</th>
            <th>Version</th>
            <th>Aliases</th>
            <th>Features</th>
            <th>Rows</th>
            <th>Source</th>
            <th>Created</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {data?.models.map((m) => (
            <tr key={`${m.ref?.name}@${m.ref?.version}`}>
              <td>{m.ref?.name}</td>
              <td>{m.ref?.version}</td>
              <td>{m.aliases.join(', ') || '—'}</td>
              <td>{m.features.join(', ')}</td>
              <td>{String(m.trainingRows)}</td>
              <td>{m.source}</td>
              <td>{m.createdAt ? timestampDate(m.createdAt).toLocaleString() : ''}</td>
              <td>
                {!m.aliases.includes('production') && (
                  <button
                    type="button"
                    onClick={() =>
                      act(async () => {
                        const c = await inference()
                        const r = await c.promoteModel({
                          name: m.ref?.name ?? '',
                          version: m.ref?.version ?? 0,
                          alias: 'production',
                        })
                        return `${m.ref?.name} v${r.model?.ref?.version} is production (was v${r.previousVersion})`
                      })
                    }
                  >
                    Promote
                  </button>
                )}
                {m.aliases.includes('production') && (
                  <button
                    type="button"
                    onClick={() =>
                      act(async () => {
                        const c = await inference()
                        const r = await c.rollbackModel({ name: m.ref?.name ?? '' })
                        return `${m.ref?.name} back to v${r.model?.ref?.version} (was v${r.previousVersion})`
                      })
                    }
                  >
                    Roll back
                  </button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  )
}
