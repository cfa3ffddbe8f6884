import { type Logger, pino } from 'pino'
import type { CommonConfig } from './config.js'
import { activeIds } from './tracing.js'

export type { Logger }

/** A JSON-lines logger that stamps every line with the service name. */
export function createLogger(
  config: Pick<CommonConfig, 'service' | 'logLevel'>,
  destination?: pino.DestinationStream,
): Logger {
  const options: pino.LoggerOptions = {
    level: config.logLevel,
    base: { service: config.service, pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
    // With tracing on, every line written inside a span carries its trace and span ids.
    mixin: activeIds,
  }
  return destination ? pino(options, destination) : pino(options)
}
