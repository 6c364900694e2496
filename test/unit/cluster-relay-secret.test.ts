// `natpunch serve --relay-secret` (config key relay-secret, NATPUNCH_RELAY_SECRET): the peer relay's scoped
// credentials are an HMAC under this secret, so nodes configured with the same one accept each other's — issue 19's
// "relay credentials work on every node (shared secret in the config)". A node with its own (the default: random per
// process) refuses them (401, RFC 8489 §9.2.5). Real CLI nodes on loopback.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TurnClient } from '../../src/relay/client.js';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { RendezvousClient, type TurnCredentials } from '../../src/rendezvous/client.js';
import { generateKeyPair } from '../../src/session/identity.js';
import { startServeNode, type ServeNode } from '../helpers/serve-node.js';

const SECRET = 'cluster-test-secret-0123456789abcdef';

async function allocateOn(node: ServeNode, c: TurnCredentials): Promise<void> {
  const t = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const turn = new TurnClient({
    transport: t,
    server: { address: '127.0.0.1', port: node.port },
    username: c.username,
    password: c.password,
  });
  try {
    await turn.allocate({ signal: AbortSignal.timeout(5_000) });
  } finally {
    await turn.close().catch(() => {});
    t.close();
  }
}

test('credentials issued by one node allocate on another node with the same relay-secret, not on one without', async () => {
  const nodes: ServeNode[] = [];
  const t = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  let client: RendezvousClient | undefined;
  try {
    const n1 = await startServeNode(['--relay-secret', SECRET]);
    nodes.push(n1);
    const n2 = await startServeNode(['--relay-secret', SECRET]);
    nodes.push(n2);
    const n3 = await startServeNode([]);
    nodes.push(n3);
    client = new RendezvousClient({
      transport: t,
      server: { host: '127.0.0.1', port: n1.port },
      keyPair: generateKeyPair(),
      tcpFallback: false,
      autoRefresh: false,
    });
    const issued = new Promise<TurnCredentials>((resolve) => client!.once('turn-credentials', resolve));
    await client.register();
    const creds = client.turnCredentials ?? (await issued);
    await allocateOn(n1, creds);
    await allocateOn(n2, creds);
    await assert.rejects(allocateOn(n3, creds), /401/, 'a node with another secret refuses them');
  } finally {
    client?.close();
    t.close();
    for (const n of nodes) await n.stop('SIGKILL');
  }
});

test('--relay-secret shorter than 16 characters is refused with a one-line error naming the option', async () => {
  await assert.rejects(startServeNode(['--relay-secret', 'short'], 10_000), /--relay-secret: at least 16 characters/);
});
