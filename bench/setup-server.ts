// Lab fixture for bench/setup.bench.ts, on the lab's server host: `natpunch serve` (STUN + rendezvous) on PORT, a
// second STUN port (PORT + 1, hardNat's NAT measurement), and a private hyperdht network: a bootstrapper on
// DHT_PORT plus DHT_NODES - 1 more non-firewalled nodes (hyperdht classifies a NAT from ≥ 3 nodes' answers).
//   argv: HOST PORT DHT_PORT DHT_NODES  → {type:'ready', bootstrap:['HOST:DHT_PORT', ...]}; exits when stdin ends.
import { createRequire } from 'node:module';
import { startServer } from '../src/server/serve.js';

const require = createRequire(import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const DHT = require('hyperdht') as any;

const [host = '', portArg = '3478', dhtPortArg = '49737', nodesArg = '5'] = process.argv.slice(2);
const port = Number(portArg);
const dhtPort = Number(dhtPortArg);
// serve answers STUN on port + 1 itself (ServeConfig.measurePort), so one server gives the measurement both ports.
const handles = [await startServer({ port, addresses: ['0.0.0.0'] })];
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const nodes: any[] = [DHT.bootstrapper(dhtPort, host)];
await nodes[0].fullyBootstrapped();
const bootstrap = [`${host}:${dhtPort}`];
for (let i = 1; i < Number(nodesArg); i++) {
  const node = new DHT({ bootstrap, port: dhtPort + i, host, ephemeral: false, firewalled: false, anyPort: false });
  await node.fullyBootstrapped();
  nodes.push(node);
}
process.stdout.write(`${JSON.stringify({ type: 'ready', bootstrap })}\n`);
process.stdin.resume();
const stop = () =>
  void Promise.allSettled([...nodes.map((n) => n.destroy()), ...handles.map((h) => h.close())]).finally(() =>
    process.exit(0),
  );
process.stdin.on('end', stop);
process.on('SIGTERM', stop);
