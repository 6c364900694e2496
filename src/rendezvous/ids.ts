import { randomFillSync } from 'node:crypto';

/** Ids drawn per refill: one getrandom call serves this many messages. */
const POOL_IDS = 1024;

/**
 * Unpredictable 32-bit request ids for the messages the rendezvous server starts (PING, CONNECT_NOTIFY). They must
 * stay unpredictable: a PONG or NOTIFY_ACK is accepted by its id, and a guessable id would let an off-path sender
 * fake an RTT sample or cancel a notification. A counter with a random prefix would be guessable after one sample,
 * so this keeps randomness and only amortises the call: one randomFillSync per POOL_IDS ids instead of a
 * randomBytes (and its Buffer) per message.
 */
export class RequestIds {
  readonly #pool = new Uint32Array(POOL_IDS);
  #next = POOL_IDS;

  next(): number {
    if (this.#next === POOL_IDS) {
      randomFillSync(this.#pool);
      this.#next = 0;
    }
    return this.#pool[this.#next++]!;
  }
}
