import type { Duplex } from 'node:stream';
import { generateKeyPair, keyToId, loadKeyPair, type KeyPair } from '../session/identity.js';
import type { Progress } from '../natpunch.js';
import type { Session } from '../session/session.js';

/** Loads --key FILE or NATPUNCH_KEY; without either, a temporary key (said so on stderr). */
export async function keyFromOptions(file: string | undefined, quiet: boolean): Promise<KeyPair> {
  if (file || process.env.NATPUNCH_KEY) return loadKeyPair(file);
  const kp = generateKeyPair();
  if (!quiet) process.stderr.write(`natpunch: no --key or NATPUNCH_KEY; using a temporary key ${keyToId(kp.publicKey)} (create one with \`natpunch keygen\`)\n`);
  return kp;
}

/** Progress lines on stderr: human text, or one JSON object per line with --json. */
const TECHNIQUE_NAMES = { p2pnat: 'P2P-NAT', natblaster: 'NATBlaster', stunt1: 'STUNT #1' } as const;

export function progressPrinter(json: boolean | undefined): (p: Progress | Record<string, unknown>) => void {
  return (p) => {
    if (json) {
      process.stderr.write(`${JSON.stringify(p)}\n`);
      return;
    }
    const e = p as Progress;
    switch (e.phase) {
      case 'gathering':
        process.stderr.write(`gathering: local socket ${e.local.address}:${e.local.port}\n`);
        break;
      case 'registered':
        process.stderr.write(`registered: the rendezvous sees us at ${e.reflexive.address}:${e.reflexive.port}\n`);
        break;
      case 'offer':
        process.stderr.write(`peer ${e.peerName ? `${e.peerName} ` : ''}${e.peer.slice(0, 16)}…: ${e.candidates.length} candidate${e.candidates.length === 1 ? '' : 's'} (${e.candidates.map((c) => `${c.type} ${c.address}:${c.port}`).join(', ')})\n`);
        break;
      case 'punching':
        process.stderr.write(`punching: checking ${e.pairs} candidate pair${e.pairs === 1 ? '' : 's'}\n`);
        break;
      case 'path':
        process.stderr.write(`path chosen: ${e.kind} via ${e.type} ${e.remote.address}:${e.remote.port}${e.rttMs !== null ? `, rtt ${e.rttMs} ms` : ''}${e.technique && e.technique !== 'p2pnat' ? ` (${TECHNIQUE_NAMES[e.technique]}${e.reason ? `: ${e.reason}` : ''})` : ''}\n`);
        break;
      case 'port-mapping':
        process.stderr.write(e.ok ? `port mapping: ${e.protocol} on ${e.gateway} maps ${e.external?.address}:${e.external?.port} to us\n` : `port mapping: none (${e.error}); going on without\n`);
        break;
      case 'connected':
        process.stderr.write(`connected: authenticated session with ${e.peer}${e.rttMs !== null ? `, rtt ${e.rttMs} ms` : ''}\n`);
        break;
      default:
        process.stderr.write(`${JSON.stringify(p)}\n`);
    }
  };
}

/**
 * Pipes stdin into the stream and the stream into stdout (netcat style). Resolves when both directions are done;
 * stdin's end half-closes the stream, the peer's end finishes stdout.
 */
export function pipeStdio(stream: Duplex, session: Session): Promise<void> {
  return new Promise((resolve, reject) => {
    let inDone = false;
    let outDone = false;
    const check = () => {
      if (inDone && outDone) resolve();
    };
    stream.on('error', (err) => reject(err));
    session.once('close', (err: Error | null) => {
      if (err) reject(err);
    });
    stream.pipe(process.stdout, { end: false });
    stream.on('end', () => {
      outDone = true;
      check();
    });
    process.stdin.on('data', (chunk: Buffer) => {
      if (!stream.write(chunk)) {
        process.stdin.pause();
        stream.once('drain', () => process.stdin.resume());
      }
    });
    process.stdin.on('end', () => {
      stream.end();
      inDone = true;
      check();
    });
    process.stdin.on('error', () => {
      stream.end();
      inDone = true;
      check();
    });
  });
}

export function parseAllow(list: string[] | undefined): string[] | undefined {
  if (!list || list.length === 0) return undefined;
  return list.flatMap((s) => s.split(',')).map((s) => s.trim().toLowerCase()).filter(Boolean);
}
