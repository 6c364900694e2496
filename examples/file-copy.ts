// File copy: the receiver registers a name and writes the first file a peer sends; the sender connects by name and
// streams a file. The receiver prints the sender's key and the SHA-256 of what it wrote, the sender the same hash.
// Streams are flow-controlled end to end, so a large file never sits in memory.
//
//   node examples/file-copy.ts receive --rendezvous HOST:3478 --name inbox --out copy.bin [--allow SENDER_KEY]
//   node examples/file-copy.ts send --rendezvous HOST:3478 --name inbox FILE
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { Transform } from 'node:stream';
import { parseArgs } from 'node:util';
import { connect, generateKeyPair, keyToId, listen, type MuxStream, type Session } from 'natpunch';
import { hostPort } from './args.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    rendezvous: { type: 'string' },
    name: { type: 'string', default: 'inbox' },
    out: { type: 'string' },
    allow: { type: 'string', multiple: true },
  },
});
const [mode, file] = positionals;
const rendezvous = hostPort(values.rendezvous);
const keyPair = generateKeyPair();

/** Passes bytes through while hashing them; `digest()` once they have all passed. */
function hasher(): Transform & { digest: () => string } {
  const hash = createHash('sha256');
  const t = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  return Object.assign(t, { digest: () => hash.digest('hex') });
}

if (mode === 'receive' && values.out) {
  // Without --allow any key may send: fine on a lab network, name the sender's key everywhere else.
  const listener = await listen({
    keyPair,
    rendezvous,
    name: values.name,
    ...(values.allow ? { allow: values.allow } : {}),
  });
  console.log(`receiving as "${values.name}" ${keyToId(keyPair.publicKey)}`);
  const [session] = (await once(listener, 'session')) as [Session];
  const [stream] = (await once(session, 'stream')) as [MuxStream];
  const hash = hasher();
  const out = createWriteStream(values.out);
  stream.pipe(hash).pipe(out);
  await once(out, 'finish');
  const digest = hash.digest();
  console.log(`wrote ${values.out} from ${keyToId(session.remotePublicKey)} sha256 ${digest}`);
  // The answer tells the sender every byte is on disk.
  stream.end(digest);
  await once(stream, 'finish');
  await session.close();
  await listener.close();
} else if (mode === 'send' && file) {
  const session = await connect({ keyPair, rendezvous, to: values.name });
  const stream = session.openStream();
  const hash = hasher();
  let answer = '';
  stream.setEncoding('utf8').on('data', (text: string) => (answer += text));
  const ended = once(stream, 'end');
  createReadStream(file).pipe(hash).pipe(stream);
  await ended;
  const digest = hash.digest();
  console.log(
    `sent ${file} sha256 ${digest}; the receiver ${answer === digest ? 'wrote the same bytes' : `reports ${answer}`}`,
  );
  await session.close();
  if (answer !== digest) process.exitCode = 1;
} else {
  console.error(
    'usage: file-copy.ts receive --rendezvous HOST:PORT --name NAME --out FILE | send --rendezvous HOST:PORT --name NAME FILE',
  );
  process.exitCode = 2;
}
