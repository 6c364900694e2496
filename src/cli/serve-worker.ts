/**
 * The entry of one `serve --workers N` worker thread (see src/server/workers.ts): binds the main thread's UDP port(s)
 * with SO_REUSEPORT and serves STUN and, with --turn and the peer relay off, TURN on them, from the same flags as the
 * main thread. No TCP, no rendezvous and no peer relay here: the main thread owns those (rendezvous datagrams, and
 * with the peer relay all TURN traffic, are steered to it).
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { RelayServiceOptions } from '../relay/service.js';
import { startServer } from '../server/serve.js';
import { SharedReservations } from '../server/reservations.js';
import { snapshotOf, WORKER_COUNTERS_INTERVAL_MS } from '../server/stun-counters.js';
import { WORKER_STOP, type WorkerMessage } from '../server/workers.js';
import { createLogger } from '../util/log.js';
import { turnOptionsFromFlags, type TurnFlags } from './turn-options.js';

/** What the main thread hands each worker (structured-cloned). */
export interface ServeWorkerData {
  index: number;
  port: number;
  addresses: string[];
  debug: boolean;
  /** TURN flags with the relay address already resolved; absent without --turn. */
  turn?: TurnFlags & { relayAddress: string; ownAddresses: string[] };
  /** TURN RESERVATION-TOKEN ports, shared with the main thread and the other workers. */
  reservationTable?: SharedArrayBuffer;
}

async function main(): Promise<void> {
  const data = workerData as ServeWorkerData;
  const logger = createLogger(data.debug ? 'debug' : 'info').child({ worker: data.index });
  const post = (m: WorkerMessage) => parentPort?.postMessage(m);
  let handle: Awaited<ReturnType<typeof startServer>>;
  try {
    // With the peer relay on (it lives with the rendezvous on the main thread) the main thread gets every TURN
    // datagram and no `turn` is handed here; otherwise the full TURN service with --turn, no relay without it.
    const relay: RelayServiceOptions | false = data.turn
      ? {
          peerRelay: false,
          turn: {
            ...turnOptionsFromFlags(data.turn, true),
            ...(data.turn.ownAddresses.length ? { ownAddresses: data.turn.ownAddresses } : {}),
            ...(data.reservationTable
              ? { reservations: new SharedReservations(data.reservationTable, data.index) }
              : {}),
          },
        }
      : false;
    handle = await startServer({
      port: data.port,
      addresses: data.addresses,
      tcp: false,
      udp: 'batched',
      reusePort: true,
      rendezvous: false,
      relay,
      logger,
    });
  } catch (err) {
    post({ type: 'error', message: (err as Error).message ?? String(err) });
    return;
  }
  // The main thread sums every thread's STUN counters for /metrics (src/server/stun-counters.ts).
  const postCounters = () => post({ type: 'stun-counters', snapshot: snapshotOf(handle.stun) });
  const counterTimer = setInterval(postCounters, WORKER_COUNTERS_INTERVAL_MS);
  counterTimer.unref();
  parentPort?.on('message', (m: unknown) => {
    if (m !== WORKER_STOP) return;
    clearInterval(counterTimer);
    postCounters();
    void handle.close().then(() => parentPort?.close());
  });
  post({ type: 'ready', info: { udp: handle.udp, socketBuffers: handle.socketBuffers ?? null } });
}

void main();
