/**
 * TURN over TLS (RFC 8656 §3.1: "turns:", default port 5349, RFC 8489 §6.2.3). Each accepted TLS connection is
 * handed to TurnServer.handleTcp: the framing (STUN messages and padded ChannelData) is the same as over TCP.
 */
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import { NatpunchError } from '../util/errors.js';
import type { TurnServer } from './server.js';

/** RFC 8489 §6.2.3 / RFC 8656 §3.1: default port for TURN over TLS. */
export const DEFAULT_TURNS_PORT = 5349;
/** A TLS handshake must finish within this time. */
export const TLS_HANDSHAKE_TIMEOUT_MS = 10_000;

export interface TurnTlsOptions {
  addresses: readonly string[];
  port?: number;
  certFile: string;
  keyFile: string;
}

export interface TurnTlsHandle {
  endpoints: Array<{ address: string; port: number }>;
  close(): Promise<void>;
}

export async function listenTurnTls(turn: TurnServer, options: TurnTlsOptions): Promise<TurnTlsHandle> {
  let cert: Buffer;
  let key: Buffer;
  try {
    cert = readFileSync(options.certFile);
    key = readFileSync(options.keyFile);
  } catch (err) {
    throw new NatpunchError('BAD_ARGUMENT', `cannot read TLS certificate/key: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const servers: tls.Server[] = [];
  const endpoints: Array<{ address: string; port: number }> = [];
  let port = options.port ?? DEFAULT_TURNS_PORT;
  try {
    for (const address of options.addresses) {
      const server = tls.createServer({ cert, key, handshakeTimeout: TLS_HANDSHAKE_TIMEOUT_MS }, (socket) =>
        turn.handleTcp(socket),
      );
      server.on('tlsClientError', () => {});
      server.on('error', () => {});
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: address, port, ipv6Only: address.includes(':') }, () => {
          server.off('error', reject);
          resolve();
        });
      });
      servers.push(server);
      const a = server.address() as { address: string; port: number };
      port = a.port; // with port 0, every address gets the first one's port
      endpoints.push({ address: a.address, port: a.port });
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw new NatpunchError(
      'BAD_ARGUMENT',
      `cannot listen for TURN over TLS on port ${port}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return {
    endpoints,
    close: async () => {
      await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
    },
  };
}
