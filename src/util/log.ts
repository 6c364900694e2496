import { pino, type Logger } from 'pino';

export type { Logger };

/** Libraries log nothing unless the embedding application passes a logger. */
export const silentLogger: Logger = pino({ level: 'silent' });

/** JSON lines on stderr for servers and --debug; `level` defaults to info. */
export function createLogger(level: string = 'info'): Logger {
  return pino({ level, base: { pid: process.pid } }, pino.destination(2));
}
