import { readFile, rename, writeFile, mkdir, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { NatpunchError } from '../util/errors.js';
import { isValidName } from '../wire/rendezvous.js';
import { ensurePrivateDir, natpunchHome, PRIVATE_FILE_MODE, HOME_DIR_MODE } from './home.js';

/**
 * Names pinned to keys on the client, as SSH's known_hosts pins host names to host keys (trust on first use).
 *
 * A rendezvous maps names to keys, and a lying or compromised rendezvous could answer a lookup for "alice" with
 * mallory's registration: the Noise handshake would then authenticate mallory perfectly. Connecting by key is safe
 * (connect() refuses any other key); connecting by name is made safe by this file: the first successful
 * connection to a name records the key it reached, and every later connection by that name refuses another key
 * BEFORE a single probe or handshake byte is sent to the peer the rendezvous introduced.
 *
 * File format (one entry a line, `#` starts a comment; written with mode 0600):
 *   NAME KEY
 * NAME as registered on the rendezvous ([a-z0-9._-]{1,63}), KEY the peer's Ed25519 public key as 64 hex digits.
 */
export const KNOWN_PEERS_FILE = 'known_peers';
const HEADER =
  '# natpunch known peers: NAME KEY (64 hex). Added on first connect by name; change with `natpunch trust NAME KEY`, remove with `natpunch forget NAME`.\n';

/** ~/.natpunch/known_peers */
export function defaultKnownPeersPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(natpunchHome(env), KNOWN_PEERS_FILE);
}

/**
 * What connect() needs from a pin store: `check` before anything goes to the introduced peer, `remember` after
 * the session authenticated (trust on first use). An application can supply its own (e.g. pins from its config).
 */
export interface PeerPins {
  /** 'pinned': `name` is pinned to `key`; 'new': nothing pinned yet. Throws PEER_KEY_CHANGED for another key. */
  check(name: string, key: Uint8Array): Promise<'pinned' | 'new'>;
  /** Pins `name` to `key` if it is not pinned yet (after a successful, authenticated connection). */
  remember(name: string, key: Uint8Array): Promise<void>;
  /** The key `name` is pinned to, if any (used where no rendezvous introduces the peer, e.g. ICMP hole punching). */
  pinned?(name: string): Promise<Uint8Array | null>;
}

export interface KnownPeerEntry {
  name: string;
  key: string;
  /** 1-based line in the file. */
  line: number;
}

const hexKey = (key: Uint8Array | string): string =>
  typeof key === 'string' ? key.toLowerCase() : Buffer.from(key).toString('hex');

function checkName(name: string): void {
  if (!isValidName(name))
    throw new NatpunchError(
      'BAD_ARGUMENT',
      `"${name.slice(0, 80)}" is not a peer name ([a-z0-9._-], 1 to 63 characters)`,
    );
}

function checkKey(key: string): void {
  if (!/^[0-9a-f]{64}$/.test(key))
    throw new NatpunchError('BAD_ARGUMENT', `"${key.slice(0, 80)}" is not a peer key (64 hex characters)`);
}

/** The error connect() raises when a name resolves to another key than the one pinned (shows both, and the fix). */
export function peerKeyChangedError(name: string, got: string, pinned: string, where: string): NatpunchError {
  return new NatpunchError(
    'PEER_KEY_CHANGED',
    `"${name}" is pinned to key ${pinned} (${where}) but the rendezvous introduced key ${got}; refusing before sending anything to it. ` +
      `Someone may be impersonating "${name}". If "${name}" really has a new key, accept it with \`natpunch trust ${name} ${got}\` (or \`natpunch forget ${name}\`)`,
    { details: { name, pinnedKey: pinned, offeredKey: got, where } },
  );
}

/** The known_peers file. Every call reads the file afresh, so `natpunch trust` in another shell takes effect. */
export class KnownPeers implements PeerPins {
  readonly file: string;
  readonly #warn: ((line: string) => void) | undefined;

  constructor(options: { file?: string; warn?: (line: string) => void } = {}) {
    this.file = resolve(options.file ?? defaultKnownPeersPath());
    this.#warn = options.warn;
  }

  /** All entries, in file order. A malformed line is an error naming it (a pin file must not be half-read). */
  async list(): Promise<KnownPeerEntry[]> {
    const text = await this.#read();
    const out: KnownPeerEntry[] = [];
    text.split('\n').forEach((raw, i) => {
      const line = raw.replace(/#.*/, '').trim();
      if (!line) return;
      const [name, key, ...rest] = line.split(/\s+/);
      if (rest.length > 0 || !name || !key || !isValidName(name) || !/^[0-9a-fA-F]{64}$/.test(key)) {
        throw new NatpunchError(
          'BAD_ARGUMENT',
          `${this.file}:${i + 1}: expected "NAME KEY" (name [a-z0-9._-], key 64 hex characters); fix or remove the line`,
        );
      }
      out.push({ name, key: key.toLowerCase(), line: i + 1 });
    });
    return out;
  }

  async get(name: string): Promise<KnownPeerEntry | null> {
    return (await this.list()).find((e) => e.name === name) ?? null;
  }

  async pinned(name: string): Promise<Uint8Array | null> {
    const entry = await this.get(name);
    return entry ? Buffer.from(entry.key, 'hex') : null;
  }

  async check(name: string, key: Uint8Array): Promise<'pinned' | 'new'> {
    const entry = await this.get(name);
    if (!entry) return 'new';
    const got = hexKey(key);
    if (entry.key === got) return 'pinned';
    throw peerKeyChangedError(name, got, entry.key, `${this.file}:${entry.line}`);
  }

  async remember(name: string, key: Uint8Array): Promise<void> {
    checkName(name);
    const k = hexKey(key);
    await this.#update((entries) => {
      const had = entries.find((e) => e.name === name);
      // Pinned meanwhile (another connect, or `trust`): the pin stays; the next connect checks against it.
      if (had) return null;
      return [...entries, { name, key: k, line: 0 }];
    });
  }

  /** Pins `name` to `key`, replacing any earlier pin. Returns the key it replaced (null: none). */
  async trust(name: string, key: string | Uint8Array): Promise<string | null> {
    checkName(name);
    const k = hexKey(key);
    checkKey(k);
    let previous: string | null = null;
    await this.#update((entries) => {
      previous = entries.find((e) => e.name === name)?.key ?? null;
      if (previous === k) return null;
      return [...entries.filter((e) => e.name !== name), { name, key: k, line: 0 }];
    });
    return previous;
  }

  /** Removes the pin of `name`. Returns the key it was pinned to (null: it was not pinned). */
  async forget(name: string): Promise<string | null> {
    checkName(name);
    let removed: string | null = null;
    await this.#update((entries) => {
      removed = entries.find((e) => e.name === name)?.key ?? null;
      return removed === null ? null : entries.filter((e) => e.name !== name);
    });
    return removed;
  }

  async #read(): Promise<string> {
    try {
      return await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return '';
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `cannot read ${this.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
  }

  /** Read, change, write atomically (a temporary file renamed over the old one, mode 0600). null: no change. */
  async #update(change: (entries: KnownPeerEntry[]) => KnownPeerEntry[] | null): Promise<void> {
    const next = change(await this.list());
    if (!next) return;
    const dir = dirname(this.file);
    if (dir === natpunchHome()) await ensurePrivateDir(dir, this.#warn);
    else await mkdir(dir, { recursive: true, mode: HOME_DIR_MODE });
    const body = HEADER + next.map((e) => `${e.name} ${e.key}\n`).join('');
    const tmp = `${this.file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await writeFile(tmp, body, { mode: PRIVATE_FILE_MODE, flag: 'wx' });
      await rename(tmp, this.file);
    } catch (err) {
      await unlink(tmp).catch(() => {});
      throw new NatpunchError(
        'BAD_ARGUMENT',
        `cannot write ${this.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
  }
}
