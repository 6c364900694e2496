/**
 * A registration record packed into one small Buffer, for the memory registry: 100k registered peers as 100k
 * objects with nested candidate objects and address strings cost ~1 KiB each on the heap; packed, about a quarter.
 * The packed form also owns its bytes: a record built from a decoded REGISTER holds views into the received
 * datagram, and keeping those views would keep whole receive buffers alive for the registration's lifetime.
 *
 * Layout (big-endian): registeredAt f64 expiresAt f64 lastTimestamp f64 rttMs u32 flags u8
 * reflexive(endpoint) candidateCount u8 candidates(type u8, endpoint, priority u32)* [name][natType][node][key[32]]
 * endpoint = transport u8 (0 udp, 1 tcp), family u8 (4|16 = address length), address, port u16;
 * the optional strings are u8 length + UTF-8, present when their flag bit is set. The key is left out when the
 * record is stored under it (PackedRecordMap keyed by the key's bytes as a one-byte string, as the registry does):
 * the table's key already holds those 32 bytes, and a second copy in every record was ~3 MiB at 100k peers.
 */
import type { Candidate, CandidateType } from '../traversal/candidate.js';
import { formatAddress, parseIPv4, parseIPv6 } from '../wire/ip.js';
import type { Endpoint } from '../wire/rendezvous.js';
import { ByteSlab } from './slab.js';

/** The shape of a registry record (PeerRecord in registry.ts, which imports this module). */
export interface PackableRecord {
  publicKey: Buffer;
  name?: string;
  candidates: Candidate[];
  reflexive: Endpoint;
  reachable: boolean;
  registeredAt: number;
  expiresAt: number;
  lastTimestamp: number;
  rttMs?: number;
  node?: string;
  natType?: string;
}

const TYPES: readonly CandidateType[] = ['host', 'srflx', 'prflx', 'predicted', 'mapped', 'relay', 'icmp'];
const REACHABLE = 1;
const HAS_NAME = 2;
const HAS_NAT = 4;
const HAS_NODE = 8;
const HAS_RTT = 16;
/** The key's 32 bytes close the record (it is not stored under them). */
const HAS_KEY = 32;
/** Strings longer than this are not packed (names are at most 63 bytes on the wire; NAT types and node ids short). */
const MAX_STRING = 255;

function addressBytes(address: string): Uint8Array | null {
  return address.includes(':') ? parseIPv6(address) : parseIPv4(address);
}

function endpointSize(e: { address: string }): number {
  return 4 + (addressBytes(e.address)?.length ?? 0);
}

/**
 * Packs `r`; undefined when something in it does not fit the layout (the caller keeps the object then). With
 * `keyIsId` the key is left out: whoever stores the bytes keys them by it and gives it back to unpackRecord.
 */
export function packRecord(r: PackableRecord, keyIsId = false): Buffer | undefined {
  const strings = [r.name, r.natType, r.node].map((s) => (s === undefined ? undefined : Buffer.from(s, 'utf8')));
  if (strings.some((s) => s && s.length > MAX_STRING) || r.candidates.length > 255 || r.publicKey.length !== 32)
    return undefined;
  let size = (keyIsId ? 0 : 32) + 24 + 4 + 1 + endpointSize(r.reflexive) + 1;
  for (const c of r.candidates) size += 1 + endpointSize(c) + 4;
  for (const s of strings) if (s) size += 1 + s.length;
  const b = Buffer.allocUnsafe(size);
  let o = 0;
  o = b.writeDoubleBE(r.registeredAt, o);
  o = b.writeDoubleBE(r.expiresAt, o);
  o = b.writeDoubleBE(r.lastTimestamp, o);
  o = b.writeUInt32BE(r.rttMs !== undefined && r.rttMs >= 0 && r.rttMs <= 0xffffffff ? Math.round(r.rttMs) : 0, o);
  const flags =
    (r.reachable ? REACHABLE : 0) |
    (r.name !== undefined ? HAS_NAME : 0) |
    (r.natType !== undefined ? HAS_NAT : 0) |
    (r.node !== undefined ? HAS_NODE : 0) |
    (r.rttMs !== undefined ? HAS_RTT : 0) |
    (keyIsId ? 0 : HAS_KEY);
  o = b.writeUInt8(flags, o);
  const endpoint = (e: { transport: 'udp' | 'tcp'; address: string; port: number }): boolean => {
    const a = addressBytes(e.address);
    if (!a) return false;
    o = b.writeUInt8(e.transport === 'tcp' ? 1 : 0, o);
    o = b.writeUInt8(a.length, o);
    b.set(a, o);
    o += a.length;
    o = b.writeUInt16BE(e.port, o);
    return true;
  };
  if (!endpoint(r.reflexive)) return undefined;
  o = b.writeUInt8(r.candidates.length, o);
  for (const c of r.candidates) {
    const t = TYPES.indexOf(c.type);
    if (t < 0 || !Number.isInteger(c.priority) || c.priority < 0 || c.priority > 0xffffffff) return undefined;
    o = b.writeUInt8(t, o);
    if (!endpoint(c)) return undefined;
    o = b.writeUInt32BE(c.priority, o);
  }
  for (const s of strings) {
    if (!s) continue;
    o = b.writeUInt8(s.length, o);
    b.set(s, o);
    o += s.length;
  }
  if (!keyIsId) b.set(r.publicKey, o);
  return b;
}

/**
 * The record `packRecord` packed, as fresh objects. `id`: the key's bytes as a one-byte string, for a record packed
 * without its key.
 */
export function unpackRecord(b: Buffer, id?: string): PackableRecord {
  let o = 0;
  const registeredAt = b.readDoubleBE(o);
  const expiresAt = b.readDoubleBE(o + 8);
  const lastTimestamp = b.readDoubleBE(o + 16);
  const rtt = b.readUInt32BE(o + 24);
  const flags = b[o + 28]!;
  o += 29;
  const endpoint = (): Endpoint => {
    const transport = b[o] === 1 ? 'tcp' : 'udp';
    const len = b[o + 1]!;
    const address = formatAddress(b.subarray(o + 2, o + 2 + len));
    const port = b.readUInt16BE(o + 2 + len);
    o += 4 + len;
    return { transport, address, port };
  };
  const reflexive = endpoint();
  const count = b[o++]!;
  const candidates: Candidate[] = [];
  for (let i = 0; i < count; i++) {
    const type = TYPES[b[o++]!]!;
    const e = endpoint();
    candidates.push({ type, transport: e.transport, address: e.address, port: e.port, priority: b.readUInt32BE(o) });
    o += 4;
  }
  const str = (): string => {
    const len = b[o]!;
    const s = b.toString('utf8', o + 1, o + 1 + len);
    o += 1 + len;
    return s;
  };
  const publicKey = flags & HAS_KEY ? Buffer.from(b.subarray(b.length - 32)) : Buffer.from(id ?? '', 'latin1');
  const r: PackableRecord = {
    publicKey,
    candidates,
    reflexive,
    reachable: (flags & REACHABLE) !== 0,
    registeredAt,
    expiresAt,
    lastTimestamp,
  };
  if (flags & HAS_RTT) r.rttMs = rtt;
  if (flags & HAS_NAME) r.name = str();
  if (flags & HAS_NAT) r.natType = str();
  if (flags & HAS_NODE) r.node = str();
  return r;
}

/** Offsets in the packed layout. */
const EXPIRES_AT = 8;
const FLAGS = 28;

/**
 * A Map from key id to record that stores each record as packRecord's bytes in a ByteSlab (slab.ts: a refresh that packs to the same
 * length is written over the old bytes) and unpacks it
 * on `get`. Expiry and name are read from the bytes for sweeps over every registration. Records that do not fit the
 * layout (never from the wire codec) are kept as they are.
 */
export class PackedRecordMap<R extends PackableRecord = PackableRecord> {
  /** id → the record's address in #slab, or the record itself when it does not pack. */
  readonly #entries = new Map<string, number | R>();
  readonly #slab = new ByteSlab();

  get size(): number {
    return this.#entries.size;
  }

  get(id: string): R | undefined {
    const e = this.#entries.get(id);
    if (e === undefined) return undefined;
    return typeof e === 'number' ? (unpackRecord(this.#slab.view(e), id) as R) : e;
  }

  /** Expiry and name of `id` without unpacking. */
  summary(id: string): { expiresAt: number; name: string | undefined } | undefined {
    const e = this.#entries.get(id);
    if (e === undefined) return undefined;
    if (typeof e !== 'number') return { expiresAt: e.expiresAt, name: e.name };
    return { expiresAt: this.#slab.readDouble(e, EXPIRES_AT), name: packedName(this.#slab.view(e)) };
  }

  set(id: string, r: R): void {
    const packed = packRecord(r, isKeyId(id, r.publicKey));
    const e = this.#entries.get(id);
    if (packed === undefined) {
      if (typeof e === 'number') this.#slab.release(e);
      this.#entries.set(id, r);
    } else if (typeof e === 'number') {
      const at = this.#slab.replace(e, packed);
      if (at !== e) this.#entries.set(id, at);
    } else this.#entries.set(id, this.#slab.store(packed));
  }

  delete(id: string): boolean {
    const e = this.#entries.get(id);
    if (e === undefined) return false;
    if (typeof e === 'number') this.#slab.release(e);
    return this.#entries.delete(id);
  }

  /** [id, expiresAt] for every record, without unpacking. */
  *summaries(): IterableIterator<[string, number]> {
    for (const [id, e] of this.#entries)
      yield [id, typeof e === 'number' ? this.#slab.readDouble(e, EXPIRES_AT) : e.expiresAt];
  }

  /** Every record, unpacked one at a time. */
  *values(): IterableIterator<R> {
    for (const [id, e] of this.#entries) yield typeof e === 'number' ? (unpackRecord(this.#slab.view(e), id) as R) : e;
  }
}

/** Whether `id` is `key`'s 32 bytes as a one-byte string (then a record stored under it need not repeat them). */
function isKeyId(id: string, key: Buffer): boolean {
  if (id.length !== 32 || key.length !== 32) return false;
  for (let i = 0; i < 32; i++) if (id.charCodeAt(i) !== key[i]) return false;
  return true;
}

/** The name in a packed record, walking past the addresses. */
function packedName(b: Buffer): string | undefined {
  if ((b[FLAGS]! & HAS_NAME) === 0) return undefined;
  let o = FLAGS + 1;
  o += 4 + b[o + 1]!; // reflexive
  const count = b[o++]!;
  for (let i = 0; i < count; i++) o += 1 + 4 + b[o + 2]! + 4;
  const len = b[o]!;
  return b.toString('utf8', o + 1, o + 1 + len);
}
