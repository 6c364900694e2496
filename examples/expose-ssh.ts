// Reach an SSH-like TCP service behind a NAT. The home side exposes one local port to ONE peer key; the other side
// forwards a local port through an encrypted session to it, so `ssh -p 2222 localhost` reaches the home's port 22.
// Nothing else is reachable: the exposing side serves exactly the ports it names, and only to the allowed key.
//
//   node examples/expose-ssh.ts keygen laptop.key                       # prints the laptop's public key
//   node examples/expose-ssh.ts expose --rendezvous HOST:3478 --name home --port 22 --allow LAPTOP_KEY
//   node examples/expose-ssh.ts forward --rendezvous HOST:3478 --name home --port 22 --local 2222 --key laptop.key
//   ssh -p 2222 localhost
import { parseArgs } from 'node:util';
import { expose, generateKeyPair, keyToId, linkTo, loadKeyPair, saveKeyPair, TcpForwarder } from 'natpunch';
import { hostPort } from './args.js';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    rendezvous: { type: 'string' },
    name: { type: 'string', default: 'home' },
    port: { type: 'string', default: '22' },
    local: { type: 'string', default: '2222' },
    allow: { type: 'string', multiple: true },
    key: { type: 'string' },
  },
});
const [mode, keyFile] = positionals;
const port = Number(values.port);

if (mode === 'keygen' && keyFile) {
  const keyPair = generateKeyPair();
  await saveKeyPair(keyFile, keyPair);
  console.log(keyToId(keyPair.publicKey));
} else if (mode === 'expose') {
  if (!values.allow) {
    console.error('expose needs --allow PEER_KEY: the key of the machine that may reach the service');
    process.exit(2);
  }
  const handle = await expose({
    keyPair: values.key ? await loadKeyPair(values.key) : generateKeyPair(),
    rendezvous: hostPort(values.rendezvous),
    name: values.name,
    allow: values.allow,
    exit: { targets: [{ host: '127.0.0.1', port }] },
  });
  handle.exit.on('event', (e: { event: string; peer: string }) => console.log(`${e.event} ${e.peer.slice(0, 16)}…`));
  console.log(`exposing 127.0.0.1:${port} as "${values.name}" to ${values.allow.length} key(s)`);
  const stop = () => void handle.close();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else if (mode === 'forward' && values.key) {
  const link = linkTo({
    keyPair: await loadKeyPair(values.key),
    rendezvous: hostPort(values.rendezvous),
    to: values.name,
  });
  const forwarder = new TcpForwarder({
    link,
    remotePort: port,
    listen: { port: Number(values.local) },
    peerLabel: values.name,
  });
  const local = await forwarder.listen();
  console.log(`forwarding ${local.address}:${local.port} to ${values.name}:${port}`);
  const stop = () => {
    void forwarder.close();
    void link.close();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
} else {
  console.error(
    'usage: expose-ssh.ts keygen FILE | expose --rendezvous H:P --port 22 --allow KEY | forward --rendezvous H:P --port 22 --local 2222 --key FILE',
  );
  process.exitCode = 2;
}
