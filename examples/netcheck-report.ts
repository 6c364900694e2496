// Netcheck report: what the NAT in front of this machine does, in a few lines a person can read, from a natpunch
// (or any RFC 5780) STUN server. Port-mapping probes (which talk to your gateway) stay off unless asked for.
//
//   natpunch serve --address PUBLIC_IP --alt-address SECOND_IP        # an RFC 5780 server
//   node examples/netcheck-report.ts PUBLIC_IP:3478 [--port-mapping] [--json]
import { parseArgs } from 'node:util';
import { netcheck } from 'natpunch';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { 'port-mapping': { type: 'boolean', default: false }, json: { type: 'boolean', default: false } },
});
if (positionals.length === 0) {
  console.error('usage: netcheck-report.ts SERVER[:PORT]... [--port-mapping] [--json]');
  process.exit(2);
}

const report = await netcheck({ servers: positionals, portMapping: values['port-mapping'] });
if (values.json) {
  console.log(JSON.stringify(report));
} else {
  const addr = (e: { address: string; port: number } | null) => (e ? `${e.address}:${e.port}` : 'unknown');
  console.log(`verdict:      ${report.verdict}`);
  console.log(`difficulty:   ${report.difficulty}`);
  console.log(`public UDP:   ${addr(report.udp.publicAddress)} (local ${addr(report.udp.localAddress)})`);
  console.log(`mapping:      ${report.udp.mapping}`);
  console.log(`filtering:    ${report.udp.filtering}`);
  console.log(`hairpinning:  ${report.udp.hairpinning ?? 'unknown'}`);
  console.log(`public TCP:   ${addr(report.tcp.publicAddress)}`);
  for (const u of report.undetermined) console.log(`not determined: ${u.what} (${u.why})`);
}
// A server that never answered is a failed check, not a report of "no NAT".
if (!report.servers.some((s) => s.reachable)) process.exitCode = 1;
