// Messages between the scoring pool and its ONNX Runtime worker threads.

export interface WorkerSetup {
  provider: 'cpu' | 'cuda'
}

export type WorkerRequest =
  | { type: 'load'; id: number; key: string; bytes: Uint8Array; features: number }
  | { type: 'run'; id: number; key: string; values: Float64Array; rows: number; features: number }
  | { type: 'release'; key: string }

export type WorkerReply =
  | { type: 'loaded'; id: number; provider: 'cpu' | 'cuda' }
  | { type: 'ran'; id: number; outputs: Float64Array[] }
  | { type: 'error'; id: number; message: string }
  | { type: 'provider'; provider: 'cpu' | 'cuda'; reason: string }
