// Messages between the scoring pool and its ONNX Runtime worker threads.
import type { BatchOutcome } from './batch.js'

export interface WorkerSetup {
  provider: 'cpu' | 'cuda'
  /** Share of devices (0..100) scored by a `canary` version where one exists. */
  canaryPercent: number
}

export type WorkerRequest =
  | { type: 'load'; id: number; key: string; bytes: Uint8Array; features: number }
  | { type: 'run'; id: number; key: string; values: Float64Array; rows: number; features: number }
  | { type: 'release'; key: string }
  /** Which loaded model serves an alias now (`key` undefined: none). */
  | { type: 'route'; name: string; alias: 'production' | 'canary'; key: string | undefined }
  | { type: 'batch'; id: number; data: Uint8Array; fallbackId: string; inferredAtMs: number }

export type WorkerReply =
  | { type: 'loaded'; id: number; provider: 'cpu' | 'cuda' }
  | { type: 'ran'; id: number; outputs: Float64Array[] }
  | { type: 'batched'; id: number; outcome: BatchOutcome }
  | { type: 'error'; id: number; message: string; poison?: boolean }
  | { type: 'provider'; provider: 'cpu' | 'cuda'; reason: string }
  /** Something the service should log (a thread has no logger of its own). */
  | { type: 'notice'; message: string }
