// Anti-amplification of the TURN server (issue 18 hole 5): no unauthenticated UDP request gets more bytes back than
// it sent, except the RFC-required answers (401/420/400 challenges, Binding), and those only within the documented
// budget (relay/server.ts AMPLIFIED_BURST per source, then AMPLIFIED_PER_SECOND). A padded request (PADDING,
// RFC 5780 §7.6, as the natpunch client sends) always gets its answer, never larger than itself.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { TurnServer, AMPLIFIED_BURST } from '../../src/relay/server.js';
import { UsersFileStore } from '../../src/relay/auth.js';
import { UNAUTHENTICATED_REQUEST_PAD_BYTES } from '../../src/relay/client.js';
import { A, Cls, Method, StunBuilder, parseStun } from '../../src/relay/message.js';

const cleanups: Array<() => unknown> = [];
after(() => {
  for (const c of cleanups.reverse()) c();
});

/** Each unauthenticated request type, as a builder (fresh transaction id per call). */
const REQUESTS: Record<string, (tid: Buffer) => StunBuilder> = {
  'Allocate (no attributes, 20 bytes)': (tid) => new StunBuilder(Method.Allocate, Cls.Request, tid),
  'Allocate (REQUESTED-TRANSPORT)': (tid) =>
    new StunBuilder(Method.Allocate, Cls.Request, tid).add(A.REQUESTED_TRANSPORT, Buffer.from([17, 0, 0, 0])),
  Refresh: (tid) => new StunBuilder(Method.Refresh, Cls.Request, tid),
  CreatePermission: (tid) => new StunBuilder(Method.CreatePermission, Cls.Request, tid),
  ChannelBind: (tid) => new StunBuilder(Method.ChannelBind, Cls.Request, tid),
  'Connect (RFC 6062)': (tid) => new StunBuilder(Method.Connect, Cls.Request, tid),
  'ConnectionBind (RFC 6062)': (tid) => new StunBuilder(Method.ConnectionBind, Cls.Request, tid),
  'Binding (standalone turn serve)': (tid) => new StunBuilder(Method.Binding, Cls.Request, tid),
  '420: unknown comprehension-required attribute': (tid) =>
    new StunBuilder(Method.Allocate, Cls.Request, tid).add(0x7ffe, Buffer.alloc(0)),
  '400: MESSAGE-INTEGRITY without USERNAME': (tid) =>
    new StunBuilder(Method.Allocate, Cls.Request, tid).add(A.MESSAGE_INTEGRITY, Buffer.alloc(20)),
};

function padded(b: StunBuilder): Buffer {
  const pad = UNAUTHENTICATED_REQUEST_PAD_BYTES - b.length - 4;
  if (pad > 0) b.add(A.PADDING, Buffer.alloc(pad));
  return b.finish();
}

test('every unauthenticated TURN request over UDP: answered with ≤ 1× its size, beyond that only within the budget', async () => {
  const server = new TurnServer({ credentials: new UsersFileStore('u:p\n'), relayAddress: '127.0.0.1' });
  cleanups.push(() => server.close());
  const { port } = await server.listen({ port: 0, address: '127.0.0.1' });
  const rows: string[] = [
    '| request | request bytes | answer bytes | padded request | its answer |',
    '|---|---|---|---|---|',
  ];
  for (const [index, [name, build]] of Object.entries(REQUESTS).entries()) {
    // A source address of its own per request type (127.0.0.0/8 is all loopback): each has its own budget.
    const sock = dgram.createSocket('udp4');
    cleanups.push(() => sock.close());
    await new Promise<void>((r) => sock.bind(0, `127.0.0.${10 + index}`, r));
    const answers = new Map<string, number>();
    let waiting: { tid: string; resolve: () => void } | null = null;
    sock.on('message', (m) => {
      const msg = parseStun(m);
      if (!msg) return;
      const tid = msg.transactionKey;
      answers.set(tid, m.length);
      if (waiting?.tid === tid) waiting.resolve();
    });
    const ask = (buf: Buffer) => sock.send(buf, port, '127.0.0.1');
    let larger = 0;
    let requestSize = 0;
    let answerSize = 0;
    let paddedSize = 0;
    let paddedAnswer = 0;
    const rounds = AMPLIFIED_BURST + 6;
    for (let i = 0; i < rounds; i++) {
      const tid = randomBytes(12);
      const small = build(tid).finish();
      requestSize = small.length;
      ask(small);
      // A padded request right behind it: its answer arriving means the small one's answer (if any) came first.
      const ptid = randomBytes(12);
      const big = padded(build(ptid));
      paddedSize = big.length;
      const got = new Promise<void>((resolve) => (waiting = { tid: ptid.toString('hex'), resolve }));
      ask(big);
      await got;
      paddedAnswer = answers.get(ptid.toString('hex'))!;
      assert.ok(paddedAnswer <= big.length, `${name}: padded request ${big.length} B answered with ${paddedAnswer} B`);
      const a = answers.get(tid.toString('hex'));
      if (a !== undefined) {
        answerSize = Math.max(answerSize, a);
        if (a > small.length) larger++;
      }
    }
    // The budget refills at AMPLIFIED_PER_SECOND: a slow machine may earn one or two more during the rounds.
    assert.ok(larger <= AMPLIFIED_BURST + 2, `${name}: ${larger} answers larger than the request`);
    if (answerSize > requestSize) assert.ok(larger >= 1, `${name}: the RFC-required answer is sent within the budget`);
    rows.push(`| ${name} | ${requestSize} | ${answerSize || '-'} | ${paddedSize} | ${paddedAnswer} |`);
  }
  assert.ok(server.stats.amplificationDropped > 0);
  // The table (for docs/peer-relay.md and the security table): printed as a test diagnostic.
  console.log(rows.join('\n'));
});

test('Send indications and ChannelData from a stranger get no answer at all', async () => {
  const server = new TurnServer({ credentials: new UsersFileStore('u:p\n'), relayAddress: '127.0.0.1' });
  cleanups.push(() => server.close());
  const { port } = await server.listen({ port: 0, address: '127.0.0.1' });
  const sock = dgram.createSocket('udp4');
  cleanups.push(() => sock.close());
  await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
  const heard: Buffer[] = [];
  let last: (() => void) | null = null;
  const ptid = randomBytes(12);
  sock.on('message', (m) => {
    heard.push(m);
    if (parseStun(m)?.transactionKey === ptid.toString('hex')) last?.();
  });
  sock.send(
    new StunBuilder(Method.Send, Cls.Indication, randomBytes(12)).add(A.DATA, Buffer.from('x')).finish(),
    port,
    '127.0.0.1',
  );
  sock.send(Buffer.from([0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4]), port, '127.0.0.1');
  const done = new Promise<void>((r) => (last = r));
  sock.send(padded(new StunBuilder(Method.Allocate, Cls.Request, ptid)), port, '127.0.0.1');
  await done;
  assert.equal(heard.length, 1, 'only the padded Allocate was answered');
});
