import sodium from 'sodium-native';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { ensurePrivateDir, natpunchHome, HOME_DIR_MODE } from '../identity/home.js';
import { NatpunchError } from '../util/errors.js';

/**
 * A peer's identity: an Ed25519 key pair (libsodium crypto_sign). The same pair is the Noise static key of the
 * session (as @hyperswarm/secret-stream uses it) and signs rendezvous registrations. The public key IS the peer id.
 */
export interface KeyPair {
  publicKey: Buffer; // 32 bytes
  secretKey: Buffer; // 64 bytes (seed + public key, libsodium layout)
}

export const PUBLIC_KEY_BYTES = sodium.crypto_sign_PUBLICKEYBYTES;
export const SECRET_KEY_BYTES = sodium.crypto_sign_SECRETKEYBYTES;
export const SIGNATURE_BYTES = sodium.crypto_sign_BYTES;

export function generateKeyPair(seed?: Uint8Array): KeyPair {
  const publicKey = Buffer.alloc(PUBLIC_KEY_BYTES);
  const secretKey = Buffer.alloc(SECRET_KEY_BYTES);
  if (seed) {
    if (seed.length !== sodium.crypto_sign_SEEDBYTES)
      throw new NatpunchError('BAD_ARGUMENT', 'key seed must be 32 bytes');
    sodium.crypto_sign_seed_keypair(publicKey, secretKey, Buffer.from(seed));
  } else {
    sodium.crypto_sign_keypair(publicKey, secretKey);
  }
  return { publicKey, secretKey };
}

export function sign(message: Uint8Array, secretKey: Uint8Array): Buffer {
  const signature = Buffer.alloc(SIGNATURE_BYTES);
  sodium.crypto_sign_detached(
    signature,
    Buffer.from(message.buffer, message.byteOffset, message.byteLength),
    Buffer.from(secretKey.buffer, secretKey.byteOffset, secretKey.byteLength),
  );
  return signature;
}

export function verify(signature: Uint8Array, message: Uint8Array, publicKey: Uint8Array): boolean {
  if (signature.length !== SIGNATURE_BYTES || publicKey.length !== PUBLIC_KEY_BYTES) return false;
  return sodium.crypto_sign_verify_detached(
    Buffer.from(signature.buffer, signature.byteOffset, signature.byteLength),
    Buffer.from(message.buffer, message.byteOffset, message.byteLength),
    Buffer.from(publicKey.buffer, publicKey.byteOffset, publicKey.byteLength),
  );
}

/** Peer ids are printed and typed as lowercase hex of the public key (64 characters). */
export function keyToId(publicKey: Uint8Array): string {
  return Buffer.from(publicKey).toString('hex');
}

export function idToKey(id: string): Buffer {
  if (!/^[0-9a-fA-F]{64}$/.test(id))
    throw new NatpunchError('BAD_ARGUMENT', `not a peer key (64 hex characters): "${id.slice(0, 80)}"`);
  return Buffer.from(id, 'hex');
}

export function isPeerId(text: string): boolean {
  return /^[0-9a-fA-F]{64}$/.test(text);
}

/**
 * Key file: JSON { publicKey: hex, secretKey: hex }, mode 0600. Directories it creates are 0700; ~/.natpunch is
 * made (or tightened to) 0700, with a note to `warn` when it had to be changed.
 */
export async function saveKeyPair(file: string, keyPair: KeyPair, warn?: (line: string) => void): Promise<void> {
  const dir = dirname(resolve(file));
  if (dir === natpunchHome()) await ensurePrivateDir(dir, warn);
  else await mkdir(dir, { recursive: true, mode: HOME_DIR_MODE });
  const body = JSON.stringify(
    { publicKey: keyToId(keyPair.publicKey), secretKey: keyPair.secretKey.toString('hex') },
    null,
    2,
  );
  await writeFile(file, `${body}\n`, { mode: 0o600, flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'EEXIST') throw new NatpunchError('BAD_ARGUMENT', `${file} exists; refusing to overwrite a key`);
    throw err;
  });
}

export function parseKeyPair(text: string, origin: string): KeyPair {
  let parsed: { publicKey?: unknown; secretKey?: unknown };
  try {
    parsed = JSON.parse(text);
  } catch {
    // Also accept the bare hex secret key (as an env var holds it).
    parsed = { secretKey: text.trim() };
  }
  const sk = typeof parsed.secretKey === 'string' ? parsed.secretKey : '';
  if (!/^[0-9a-fA-F]{128}$/.test(sk))
    throw new NatpunchError('BAD_ARGUMENT', `${origin}: no valid secretKey (128 hex characters)`);
  const secretKey = Buffer.from(sk, 'hex');
  const publicKey = Buffer.from(secretKey.subarray(32));
  if (typeof parsed.publicKey === 'string' && parsed.publicKey.toLowerCase() !== keyToId(publicKey)) {
    throw new NatpunchError('BAD_ARGUMENT', `${origin}: publicKey does not match secretKey`);
  }
  return { publicKey, secretKey };
}

/** Loads a key pair from a file, or from the NATPUNCH_KEY env var (hex secret key) when no file is given. */
export async function loadKeyPair(file?: string, env: NodeJS.ProcessEnv = process.env): Promise<KeyPair> {
  if (file) {
    const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new NatpunchError('BAD_ARGUMENT', `cannot read key file ${file}: ${err.code ?? err.message}`);
    });
    return parseKeyPair(text, file);
  }
  if (env.NATPUNCH_KEY) return parseKeyPair(env.NATPUNCH_KEY, 'NATPUNCH_KEY');
  throw new NatpunchError(
    'BAD_ARGUMENT',
    'no key: pass --key FILE or set NATPUNCH_KEY (create one with `natpunch keygen`)',
  );
}
