import { createServer, type Server } from 'node:net';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { RendezvousServer, type RendezvousServerOptions } from '../../src/rendezvous/server.js';
import { RendezvousClient, type RendezvousClientOptions } from '../../src/rendezvous/client.js';
import { decodeRendezvous, type RendezvousMessage } from '../../src/wire/rendezvous.js';
import { generateKeyPair } from '../../src/session/identity.js';

/** A rendezvous server on loopback: one UDP transport and one TCP listener on the same port number when possible. */
export interface TestServer {
  server: RendezvousServer;
  udp: NodeDatagramTransport;
  tcp: Server;
  port: number;
  tcpPort: number;
  close(): Promise<void>;
}

export async function startServer(options: RendezvousServerOptions = {}, port = 0): Promise<TestServer> {
  const udp = await NodeDatagramTransport.bind({ address: '127.0.0.1', port });
  const server = new RendezvousServer(options);
  server.attach(udp);
  const tcp = createServer((socket) => server.handleTcp(socket));
  await new Promise<void>((resolve, reject) => {
    tcp.once('error', reject);
    tcp.listen(0, '127.0.0.1', () => resolve());
  });
  const tcpPort = (tcp.address() as { port: number }).port;
  return {
    server,
    udp,
    tcp,
    port: udp.address().port,
    tcpPort,
    async close() {
      server.close();
      udp.close();
      await new Promise<void>((resolve) => tcp.close(() => resolve()));
    },
  };
}

/** Tracks clients and transports so a test can close everything in `finally`. */
export class Bag {
  #closers: Array<() => unknown> = [];
  add<T extends { close(): unknown }>(x: T): T {
    this.#closers.push(() => x.close());
    return x;
  }
  async transport(): Promise<NodeDatagramTransport> {
    return this.add(await NodeDatagramTransport.bind({ address: '127.0.0.1' }));
  }
  async client(
    srv: { port: number; tcpPort: number },
    opts: Partial<RendezvousClientOptions> = {},
  ): Promise<RendezvousClient> {
    const transport = opts.transport ?? (await this.transport());
    return this.add(
      new RendezvousClient({
        transport,
        server: { host: '127.0.0.1', port: srv.port, tcpPort: srv.tcpPort },
        keyPair: generateKeyPair(),
        initialRtoMs: 100,
        requestTimeoutMs: 5000,
        ...opts,
      }),
    );
  }
  async close(): Promise<void> {
    for (const c of this.#closers.reverse()) await c();
    this.#closers = [];
  }
}

/** Sends raw bytes from `from` and waits (bounded) for the first rendezvous reply with the given request id. */
export function exchange(
  from: NodeDatagramTransport,
  port: number,
  bytes: Buffer,
  requestId: number,
  timeoutMs = 2000,
): Promise<RendezvousMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error('no reply'));
    }, timeoutMs);
    const off = from.onMessage((msg) => {
      let m: RendezvousMessage;
      try {
        m = decodeRendezvous(msg);
      } catch {
        return;
      }
      if (m.requestId !== requestId) return;
      clearTimeout(timer);
      off();
      resolve(m);
    });
    from.send(bytes, port, '127.0.0.1');
  });
}

/** Polls `fn` until it returns true, at most `timeoutMs`. */
export async function waitFor(fn: () => boolean | Promise<boolean>, timeoutMs = 5000, stepMs = 25): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

export function once<T>(
  emitter: { once(ev: string, fn: (v: T) => void): unknown },
  event: string,
  timeoutMs = 5000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${timeoutMs} ms`)), timeoutMs);
    emitter.once(event, (v: T) => {
      clearTimeout(timer);
      resolve(v);
    });
  });
}
