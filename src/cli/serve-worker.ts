/**
 * The entry of one `serve --workers N` worker thread (see src/server/workers.ts): binds the main thread's UDP port(s)
 * with SO_REUSEPORT and serves STUN and, with --turn, TURN on them, from the same flags as the main thread. No TCP,
 * no rendezvous and no peer relay here: the main thread owns those (rendezvous datagrams are steered to it).
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { RelayServiceOptions } from '../relay/service.js';
import { startServer } from '../server/serve.js';
import { SharedReservations } from '../server/reservations.js';
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
    // Workers run only when the peer relay is off (it lives with the rendezvous on the main thread): here the full
    // TURN service with --turn, no relay without it.
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
  parentPort?.on('message', (m: unknown) => {
    if (m !== WORKER_STOP) return;
    void handle.close().then(() => parentPort?.close());
  });
  post({ type: 'ready', info: { udp: handle.udp, socketBuffers: handle.socketBuffers ?? null } });
}

void main();
