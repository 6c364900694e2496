// TURN for a WebRTC app: run a TURN server (RFC 8656) that accepts time-limited credentials derived from a secret
// you share with your web backend, and print the `iceServers` entry the backend hands to each browser's
// RTCPeerConnection. The browser's relayed candidates then work even when both peers sit behind symmetric NATs.
// The default peer policy refuses loopback, private and link-local peers, so the relay cannot reach your LAN;
// --allow-peer opens a range on purpose (a lab, or this example's test on loopback).
//
//   node examples/turn-webrtc.ts --secret "$TURN_SECRET" --address 0.0.0.0 --port 3478 --public-host turn.example.org
//
// In the browser:  new RTCPeerConnection({ iceServers: [ <the printed object> ] })
import { parseArgs } from 'node:util';
import { makeSharedSecretCredentials, SharedSecretStore, TurnServer } from 'natpunch/turn';

const { values } = parseArgs({
  options: {
    secret: { type: 'string' },
    address: { type: 'string', default: '0.0.0.0' },
    port: { type: 'string', default: '3478' },
    'public-host': { type: 'string' },
    'relay-address': { type: 'string' },
    'allow-peer': { type: 'string', multiple: true },
    ttl: { type: 'string', default: '3600' },
  },
});
if (!values.secret) {
  console.error(
    'usage: turn-webrtc.ts --secret SECRET [--address IP] [--port N] [--public-host NAME] [--relay-address IP]',
  );
  process.exit(2);
}

const server = new TurnServer({
  credentials: new SharedSecretStore([values.secret]),
  ...(values['relay-address'] ? { relayAddress: values['relay-address'] } : {}),
  ...(values['allow-peer'] ? { allowPeers: values['allow-peer'] } : {}),
});
const where = await server.listen({ address: values.address, port: Number(values.port) });
const host = values['public-host'] ?? where.address;

// What the web backend does per browser session (this is the same function it would call): username =
// "expiry", password = base64(HMAC-SHA1(secret, username)), the scheme coturn's use-auth-secret also accepts.
const { username, password, expires } = makeSharedSecretCredentials(values.secret, Number(values.ttl));
const iceServer = {
  urls: [`turn:${host}:${where.port}?transport=udp`, `turn:${host}:${where.port}?transport=tcp`],
  username,
  credential: password,
};
console.log(JSON.stringify({ iceServers: [iceServer], expires }));
console.error(
  `TURN server on ${where.address}:${where.port} (udp+tcp), relaying from ${server.relayAddress}, realm "${server.realm}"`,
);

const stop = () => server.close();
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
