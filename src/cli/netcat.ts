import type { Duplex } from 'node:stream';
import { isNatpunchError } from '../util/errors.js';
import { generateKeyPair, keyToId, loadKeyPair, type KeyPair } from '../session/identity.js';
import { createPrinter, type Emit } from './events.js';
import type { Session } from '../session/session.js';

/** Loads --key FILE or NATPUNCH_KEY; without either, a temporary key (said so as a `temporary-key` event). */
export async function keyFromOptions(file: string | undefined, emit: Emit): Promise<KeyPair> {
  if (file || process.env.NATPUNCH_KEY) return loadKeyPair(file);
  const kp = generateKeyPair();
  emit({ event: 'temporary-key', publicKey: keyToId(kp.publicKey) });
  return kp;
}

/**
 * Progress of `listen`/`connect`: the one printer (src/cli/events.ts). Their stdout carries the peer's bytes, so
 * their --json events go to stderr (src/cli/event-stream.ts).
 */
export function progressPrinter(json: boolean | undefined): Emit {
  return createPrinter({ json: Boolean(json), stdoutIsData: true });
}

/** How a piped session ended: both sides finished, the peer closed the session, or --idle-timeout passed. */
export type PipeEnd = 'done' | 'closed' | 'idle';

export interface PipeOptions {
  /** End the session after this long with no data in either direction (0 or absent: never). */
  idleTimeoutMs?: number;
}

/**
 * Pipes stdin into the stream and the stream into stdout (netcat style, `nc -N`): stdin's end half-closes the
 * stream, the peer's end finishes our output; resolves when both are done, when the session closes, or after
 * `idleTimeoutMs` without data. stdin is shared: listeners are removed at the end so `listen --keep-open` can pipe
 * it into the next session; once stdin has ended, later sessions get their write side ended at once.
 */
export function pipeStdio(stream: Duplex, session: Session, options: PipeOptions = {}): Promise<PipeEnd> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    let inDone = false;
    let outDone = false;
    let idleTimer: NodeJS.Timeout | undefined;
    const finish = (how: PipeEnd, err?: Error) => {
      clearTimeout(idleTimer);
      stdin.off('data', onData);
      stdin.off('end', onInputEnd);
      stdin.off('error', onInputEnd);
      stream.off('data', onOutput);
      session.off('close', onClose);
      stdin.pause();
      if (err) reject(err);
      else resolve(how);
    };
    const touch = () => {
      if (!options.idleTimeoutMs) return;
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => finish('idle'), options.idleTimeoutMs);
    };
    const check = () => {
      if (inDone && outDone) finish('done');
    };
    const onData = (chunk: Buffer) => {
      touch();
      if (!stream.write(chunk)) {
        stdin.pause();
        stream.once('drain', () => stdin.resume());
      }
    };
    const onInputEnd = () => {
      if (inDone) return;
      stream.end();
      inDone = true;
      check();
    };
    const onOutput = (chunk: Buffer) => {
      touch();
      if (!process.stdout.write(chunk)) {
        stream.pause();
        process.stdout.once('drain', () => stream.resume());
      }
    };
    // The peer closing the session is how a netcat exchange ends on the other side; other errors are failures.
    const onClose = (err: Error | null) =>
      finish('closed', err && !isNatpunchError(err, 'SESSION_CLOSED') ? err : undefined);
    stream.on('error', onClose);
    session.once('close', onClose);
    stream.on('data', onOutput);
    stream.once('end', () => {
      outDone = true;
      check();
    });
    touch();
    if (stdin.readableEnded) onInputEnd();
    else {
      stdin.on('data', onData);
      stdin.once('end', onInputEnd);
      stdin.once('error', onInputEnd);
      stdin.resume();
    }
  });
}

export function parseAllow(list: string[] | undefined): string[] | undefined {
  if (!list || list.length === 0) return undefined;
  return list
    .flatMap((s) => s.split(','))
    .map((s) => s.trim().toLowerCase())
    .filter(Boolean);
}
