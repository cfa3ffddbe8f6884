// OpenTelemetry tracing, configured by the standard OTEL_* variables and off when they are unset
// (then every helper here is a no-op and costs nothing on the hot paths).
//
// How a reading's trace goes (README, "Tracing"): the reading's own span starts at the bridge
// (continuing the device's trace when an MQTT v5 user property `traceparent` carries one) or in the
// RPC that received it (W3C `traceparent` through the server interceptor); the span that publishes
// its batch is a child of the batch's first reading and links to the others; the batch's context
// travels in the NATS message headers (`traceparent`), so the inference run, the inferences' batch,
// the ClickHouse insert and the Watch delivery continue it.

import type { Interceptor } from '@connectrpc/connect'
import { type MsgHdrs, headers as natsHeaders } from '@nats-io/transport-node'
import {
  type Context,
  context,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  type SpanContext,
  SpanKind,
  SpanStatusCode,
  trace,
} from '@opentelemetry/api'
import { W3CTraceContextPropagator } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { resourceFromAttributes } from '@opentelemetry/resources'
import { BatchSpanProcessor, type SpanExporter } from '@opentelemetry/sdk-trace-base'
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node'

export { type Context, type Span, type SpanContext, SpanKind }

let enabled = false
let provider: NodeTracerProvider | undefined

/** Whether the OTEL_* variables ask for traces (an OTLP endpoint, and the exporter not "none"). */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.OTEL_SDK_DISABLED === 'true' || env.OTEL_TRACES_EXPORTER === 'none') return false
  return Boolean(env.OTEL_EXPORTER_OTLP_ENDPOINT || env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
}

/**
 * Starts tracing for this process when the environment asks for it (or with `exporter`, for tests).
 * The OTLP exporter reads its endpoint, headers and protocol from the standard OTEL_* variables.
 */
export function initTracing(
  service: string,
  opts: { exporter?: SpanExporter; env?: NodeJS.ProcessEnv } = {},
): boolean {
  if (provider) return enabled
  if (!opts.exporter && !tracingRequested(opts.env)) return false
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ 'service.name': `vigil-${service}`, 'service.namespace': 'vigil' }),
    spanProcessors: [
      new BatchSpanProcessor(opts.exporter ?? new OTLPTraceExporter(), { scheduledDelayMillis: 500 }),
    ],
  })
  provider.register({ propagator: new W3CTraceContextPropagator() })
  enabled = true
  return true
}

/** Sends what is buffered and stops (at process stop). */
export async function shutdownTracing(): Promise<void> {
  await provider?.shutdown()
  provider = undefined
  enabled = false
}

export function tracingEnabled(): boolean {
  return enabled
}

const tracer = () => trace.getTracer('vigil')

/** Starts a span (undefined when tracing is off). */
export function startSpan(
  name: string,
  opts: {
    parent?: Context
    kind?: SpanKind
    links?: Link[]
    attributes?: Record<string, string | number>
  } = {},
): Span | undefined {
  if (!enabled) return undefined
  return tracer().startSpan(
    name,
    { kind: opts.kind ?? SpanKind.INTERNAL, links: opts.links, attributes: opts.attributes },
    opts.parent ?? context.active(),
  )
}

/** Runs `work` inside a span (ended, with the error recorded when it throws); plain `work()` when off. */
export async function inSpan<T>(
  name: string,
  opts: Parameters<typeof startSpan>[1],
  work: (span: Span | undefined) => Promise<T>,
): Promise<T> {
  const span = startSpan(name, opts)
  if (!span) return work(undefined)
  try {
    return await context.with(trace.setSpan(opts?.parent ?? context.active(), span), () => work(span))
  } catch (err) {
    span.recordException(err as Error)
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message })
    throw err
  } finally {
    span.end()
  }
}

/** The context of a `traceparent` value (a device's, or a header's); undefined when malformed. */
export function contextFromTraceparent(traceparent: string | undefined): Context | undefined {
  if (!enabled || !traceparent) return undefined
  const ctx = propagation.extract(
    ROOT_CONTEXT,
    { traceparent },
    { get: (c, k) => c[k as 'traceparent'], keys: () => ['traceparent'] },
  )
  return trace.getSpanContext(ctx) ? ctx : undefined
}

/** The context carried by NATS message headers (`traceparent`), when tracing is on and there is one. */
export function contextFromHeaders(h: MsgHdrs | undefined): Context | undefined {
  if (!enabled || !h) return undefined
  return contextFromTraceparent(h.get('traceparent') || undefined)
}

/** NATS headers carrying `span`'s context (undefined when tracing is off). */
export function headersFor(span: Span | undefined, existing?: MsgHdrs): MsgHdrs | undefined {
  if (!span) return existing
  const h = existing ?? natsHeaders()
  propagation.inject(trace.setSpan(ROOT_CONTEXT, span), h, { set: (carrier, k, v) => carrier.set(k, v) })
  return h
}

/** The span context inside a context, if any. */
export function spanContextOf(ctx: Context): SpanContext | undefined {
  return trace.getSpanContext(ctx)
}

/** A context whose parent is `spanContext` (for spans of work done on behalf of it). */
export function contextOf(spanContext: SpanContext | undefined): Context | undefined {
  return spanContext ? trace.setSpanContext(ROOT_CONTEXT, spanContext) : undefined
}

/** The active span's context (inside an RPC, its span), when tracing is on. */
export function activeSpanContext(): SpanContext | undefined {
  return enabled ? trace.getActiveSpan()?.spanContext() : undefined
}

/**
 * A server interceptor that runs each RPC in a span, continuing the caller's trace (W3C
 * `traceparent` header) when it sent one. A no-op when tracing is off.
 */
export function tracingInterceptor(): Interceptor {
  return (next) => async (req) => {
    if (!enabled) return next(req)
    const parent = contextFromTraceparent(req.header.get('traceparent') ?? undefined) ?? ROOT_CONTEXT
    return inSpan(
      `rpc ${req.service.typeName}/${req.method.name}`,
      {
        parent,
        kind: SpanKind.SERVER,
        attributes: { 'rpc.service': req.service.typeName, 'rpc.method': req.method.name },
      },
      () => next(req),
    )
  }
}

/** The ids of the active span, for log lines (empty when none). */
export function activeIds(): { trace_id?: string; span_id?: string } {
  if (!enabled) return {}
  const sc = trace.getActiveSpan()?.spanContext()
  return sc ? { trace_id: sc.traceId, span_id: sc.spanId } : {}
}
