// Echo peer: one side registers a name on a rendezvous server and echoes every stream back; the other connects by
// that name, sends a line and prints what comes back. Both ends prove their keys (Noise); the path is direct when
// the NATs allow it.
//
//   natpunch serve --port 3478                          # a rendezvous (and STUN) server somewhere both can reach
//   node examples/echo-peer.ts serve --rendezvous HOST:3478 --name echo
//   node examples/echo-peer.ts ask --rendezvous HOST:3478 --name echo "hello"
//
// (From a checkout: `npx tsx --conditions=natpunch-source examples/echo-peer.ts ...`; see examples/README.md.)
import { parseArgs } from 'node:util';
import { connect, generateKeyPair, keyToId, listen, type MuxStream, type Session } from 'natpunch';
import { hostPort } from './args.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { rendezvous: { type: 'string' }, name: { type: 'string', default: 'echo' } },
});
const [mode, text = 'hello'] = positionals;
const rendezvous = hostPort(values.rendezvous);
const keyPair = generateKeyPair();

if (mode === 'serve') {
  const listener = await listen({ keyPair, rendezvous, name: values.name });
  console.log(`echo peer "${values.name}" is ${keyToId(keyPair.publicKey)}`);
  listener.on('session', (session: Session) => {
    session.on('stream', (stream: MuxStream) => stream.pipe(stream));
  });
  process.once('SIGINT', () => void listener.close());
  process.once('SIGTERM', () => void listener.close());
} else if (mode === 'ask') {
  const session = await connect({ keyPair, rendezvous, to: values.name });
  const stream = session.openStream();
  const chunks: Buffer[] = [];
  stream.on('data', (chunk: Buffer) => chunks.push(chunk));
  stream.end(`${text}\n`);
  await new Promise((resolve) => stream.once('end', resolve));
  process.stdout.write(
    `echo from ${keyToId(session.remotePublicKey).slice(0, 16)}… over ${session.path.kind}: ${Buffer.concat(chunks).toString()}`,
  );
  await session.close();
} else {
  console.error('usage: echo-peer.ts serve|ask --rendezvous HOST:PORT [--name NAME] [TEXT]');
  process.exitCode = 2;
}
