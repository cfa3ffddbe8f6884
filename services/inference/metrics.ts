import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { registeredOnce } from '../common/metrics.js'

/** The inference service's metrics (names documented in README.md). */
export function inferenceMetrics(registry: Registry) {
  const once = <T extends Counter | Gauge | Histogram>(name: string, make: () => T) =>
    registeredOnce(registry, name, make)
  return {
    scored: once(
      'vigil_inference_readings_total',
      () =>
        new Counter({
          name: 'vigil_inference_readings_total',
          help: 'Readings scored, by path (rpc, async) and label.',
          labelNames: ['path', 'label'],
          registers: [registry],
        }),
    ),
    unscored: once(
      'vigil_inference_unscored_total',
      () =>
        new Counter({
          name: 'vigil_inference_unscored_total',
          help: 'Readings the async workers could not score, by reason (missing_features).',
          labelNames: ['reason'],
          registers: [registry],
        }),
    ),
    runSeconds: once(
      'vigil_inference_run_seconds',
      () =>
        new Histogram({
          name: 'vigil_inference_run_seconds',
          help: 'Duration of one ONNX Runtime run (a coalesced batch), queueing in the thread included.',
          buckets: [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1],
          registers: [registry],
        }),
    ),
    runRows: once(
      'vigil_inference_run_rows',
      () =>
        new Histogram({
          name: 'vigil_inference_run_rows',
          help: 'Rows in one ONNX Runtime run.',
          buckets: [1, 4, 16, 64, 256, 1024, 4096],
          registers: [registry],
        }),
    ),
    score: once(
      'vigil_inference_score',
      () =>
        new Histogram({
          name: 'vigil_inference_score',
          help: 'Anomaly scores given (0.5 sits at the model limits).',
          buckets: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9],
          registers: [registry],
        }),
    ),
    models: once(
      'vigil_inference_models_serving',
      () =>
        new Gauge({
          name: 'vigil_inference_models_serving',
          help: 'Model aliases this process serves.',
          registers: [registry],
        }),
    ),
    refused: once(
      'vigil_inference_models_refused_total',
      () =>
        new Counter({
          name: 'vigil_inference_models_refused_total',
          help: 'Model versions refused because ONNX Runtime could not load them.',
          registers: [registry],
        }),
    ),
    bootstrapped: once(
      'vigil_inference_bootstrap_models_total',
      () =>
        new Counter({
          name: 'vigil_inference_bootstrap_models_total',
          help: 'Models the bootstrap trained from live readings, by scope (fleet, device) and outcome (promoted, failed).',
          labelNames: ['scope', 'outcome'],
          registers: [registry],
        }),
    ),
  }
}

export type InferenceMetrics = ReturnType<typeof inferenceMetrics>
