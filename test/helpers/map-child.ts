/** Child process for the closeOnSignals test: maps a port on a loopback fake gateway, then waits for a signal. */
import { PortMapper, closeOnSignals } from '../../src/portmap/mapper.js';

const [gatewayPort, internalPort] = process.argv.slice(2).map(Number);
const pm = new PortMapper({
  gateway: '127.0.0.1',
  gatewayPort,
  protocols: ['pcp'],
  retransmit: { initialMs: 100, attempts: 3 },
});
closeOnSignals(pm);
const m = await pm.map({ internalPort: internalPort!, lifetime: 3600 });
process.stdout.write(`${JSON.stringify({ mapped: m.externalPort })}\n`);
setInterval(() => {}, 60_000); // stay alive until the signal
