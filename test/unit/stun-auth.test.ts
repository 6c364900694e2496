// Long-term credentials end to end: LongTermAuthenticator on a StunServer (through registerMethod) and StunClient.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NodeDatagramTransport } from '../../src/net/datagram.js';
import { isNatpunchError } from '../../src/util/errors.js';
import { StunClient } from '../../src/stun/client.js';
import { StunServer } from '../../src/stun/server.js';
import { LongTermAuthenticator, DEFAULT_NONCE_LIFETIME_MS } from '../../src/stun/auth.js';
import {
  attr,
  createTransactionId,
  decodeStun,
  encodeStun,
  ErrorCodeAttr,
  longTermKey,
  Nonce,
  PasswordAlgorithmAttr,
  PasswordAlgorithms,
  Realm,
  StunClass,
  StunMethod,
  Userhash,
  userhash,
  Username,
  XorMappedAddress,
  type AttributeInit,
  type EncodeOptions,
} from '../../src/wire/stun/index.js';

const USERS: Record<string, string> = { alice: 'correct horse', bob: 'battery staple' };
const FROM = { family: 'IPv4' as const, address: '127.0.0.1', port: 40000 };

function authenticatedServer(auth: LongTermAuthenticator, server: StunServer): void {
  server.registerMethod(StunMethod.Binding, (req, ctx) => {
    if (req.cls !== StunClass.Request) return undefined;
    const r = auth.check(req, ctx.from);
    if (!r.ok) {
      return encodeStun({
        cls: StunClass.ErrorResponse,
        method: req.method,
        transactionId: req.transactionId,
        attributes: [attr(ErrorCodeAttr, { code: r.code, reason: r.reason }), ...r.attributes],
      });
    }
    return encodeStun(
      {
        cls: StunClass.SuccessResponse,
        method: req.method,
        transactionId: req.transactionId,
        attributes: [attr(XorMappedAddress, ctx.from)],
      },
      { ...r.sign, fingerprint: true },
    );
  });
}

async function setup(options: Partial<ConstructorParameters<typeof LongTermAuthenticator>[0]> = {}) {
  const auth = new LongTermAuthenticator({ realm: 'natpunch.test', getPassword: (u) => USERS[u], ...options });
  const serverSock = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const server = new StunServer();
  server.attachUdp(serverSock);
  authenticatedServer(auth, server);
  const clientSock = await NodeDatagramTransport.bind({ address: '127.0.0.1' });
  const client = new StunClient(clientSock);
  const to = { address: '127.0.0.1', port: serverSock.address().port };
  const close = () => {
    client.close();
    server.close();
    serverSock.close();
    clientSock.close();
  };
  return { auth, server, client, to, close };
}

const alice = { kind: 'long-term' as const, username: 'alice', password: 'correct horse' };

test('client and server negotiate SHA-256 through the nonce cookie, or MD5 when that is all the server offers', async () => {
  for (const algorithms of [undefined, ['MD5' as const]]) {
    const { client, to, server, close } = await setup(algorithms ? { algorithms } : {});
    try {
      const r = await client.binding(to, { timeoutMs: 5000, credentials: alice });
      assert.equal(r.mapped.address, '127.0.0.1');
      // The 401 challenge, then success; the next request goes authenticated straight away.
      await client.binding(to, { timeoutMs: 5000, credentials: alice });
      assert.ok(server.counters.errors >= 1 && server.counters.responses >= 2);
      const m = r.message;
      assert.ok(algorithms ? m.has(0x0008) : m.has(0x001c), 'response signed with the negotiated integrity');
    } finally {
      close();
    }
  }
});

test('an expired nonce gets 438 Stale Nonce and the client retries with the new one', async () => {
  let clock = Date.now();
  const { client, to, server, close } = await setup({ now: () => clock });
  try {
    await client.binding(to, { timeoutMs: 5000, credentials: alice });
    const errorsBefore = server.counters.errors;
    clock += DEFAULT_NONCE_LIFETIME_MS + 60_000;
    const r = await client.binding(to, { timeoutMs: 5000, credentials: alice });
    assert.equal(r.mapped.address, '127.0.0.1');
    assert.ok(server.counters.errors > errorsBefore, 'a 438 was sent');
  } finally {
    close();
  }
});

test('wrong password and unknown users get 401', async () => {
  const { client, to, close } = await setup();
  try {
    for (const credentials of [
      { kind: 'long-term' as const, username: 'alice', password: 'wrong' },
      { kind: 'long-term' as const, username: 'mallory', password: 'x' },
    ]) {
      await assert.rejects(
        client.binding(to, { timeoutMs: 5000, credentials }),
        (e: unknown) => isNatpunchError(e, 'STUN_ERROR_RESPONSE') && e.details?.code === 401,
      );
    }
  } finally {
    close();
  }
});

/** A request signed by hand, as an arbitrary (possibly hostile) client would build it. */
function request(attributes: AttributeInit[], options: EncodeOptions) {
  return decodeStun(
    encodeStun(
      { cls: StunClass.Request, method: StunMethod.Binding, transactionId: createTransactionId(), attributes },
      options,
    ),
  );
}

test('bid-down protection, RFC 5389 clients, USERHASH, missing attributes (RFC 8489 §9.2.4)', () => {
  const auth = new LongTermAuthenticator({
    realm: 'natpunch.test',
    getPassword: (u) => USERS[u],
    listUsers: () => Object.keys(USERS),
  });
  const challenge = auth.check(request([], {}), FROM);
  assert.equal(challenge.ok, false);
  assert.equal(!challenge.ok && challenge.code, 401);
  const nonce = auth.nonce(FROM);
  const base = [attr(Realm, 'natpunch.test'), attr(Nonce, nonce)];
  const md5 = longTermKey('alice', 'natpunch.test', 'correct horse', 'MD5');
  const sha = longTermKey('alice', 'natpunch.test', 'correct horse', 'SHA-256');
  const offered = [
    { algorithm: 2, params: new Uint8Array(0) },
    { algorithm: 1, params: new Uint8Array(0) },
  ];

  // A proper RFC 8489 client.
  const good = auth.check(
    request(
      [attr(Username, 'alice'), ...base, attr(PasswordAlgorithms, offered), attr(PasswordAlgorithmAttr, offered[0]!)],
      { integritySha256: sha },
    ),
    FROM,
  );
  assert.ok(good.ok && good.algorithm === 'SHA-256' && good.username === 'alice');

  // Bid-down: a man in the middle stripped SHA-256 from the list the client echoes.
  const stripped = auth.check(
    request(
      [
        attr(Username, 'alice'),
        ...base,
        attr(PasswordAlgorithms, [offered[1]!]),
        attr(PasswordAlgorithmAttr, offered[1]!),
      ],
      { integrity: md5 },
    ),
    FROM,
  );
  assert.ok(!stripped.ok && stripped.code === 400);

  // PASSWORD-ALGORITHM without PASSWORD-ALGORITHMS is malformed.
  const half = auth.check(
    request([attr(Username, 'alice'), ...base, attr(PasswordAlgorithmAttr, offered[1]!)], { integrity: md5 }),
    FROM,
  );
  assert.ok(!half.ok && half.code === 400);

  // An RFC 5389 client (neither attribute): MD5.
  const legacy = auth.check(request([attr(Username, 'alice'), ...base], { integrity: md5 }), FROM);
  assert.ok(legacy.ok && legacy.algorithm === 'MD5');

  // Username anonymity: USERHASH instead of USERNAME.
  const anonymous = auth.check(
    request(
      [
        attr(Userhash, userhash('bob', 'natpunch.test')),
        ...base,
        attr(PasswordAlgorithms, offered),
        attr(PasswordAlgorithmAttr, offered[0]!),
      ],
      {
        integritySha256: longTermKey('bob', 'natpunch.test', 'battery staple', 'SHA-256'),
      },
    ),
    FROM,
  );
  assert.ok(anonymous.ok && anonymous.username === 'bob');

  // Integrity but no NONCE: 400. A nonce issued to another address: 401.
  const noNonce = auth.check(
    request([attr(Username, 'alice'), attr(Realm, 'natpunch.test')], { integrity: md5 }),
    FROM,
  );
  assert.ok(!noNonce.ok && noNonce.code === 400);
  const moved = auth.check(request([attr(Username, 'alice'), ...base], { integrity: md5 }), {
    ...FROM,
    address: '127.0.0.9',
  });
  assert.ok(!moved.ok && moved.code === 401);
  // A forged nonce: 401.
  const i = nonce.length - 5;
  const tampered = `${nonce.slice(0, i)}${nonce[i] === 'A' ? 'B' : 'A'}${nonce.slice(i + 1)}`;
  const forged = auth.check(
    request([attr(Username, 'alice'), attr(Realm, 'natpunch.test'), attr(Nonce, tampered)], { integrity: md5 }),
    FROM,
  );
  assert.ok(!forged.ok && forged.code === 401);
});

test('check() never throws on mutated requests (5k bit flips of signed requests)', () => {
  const auth = new LongTermAuthenticator({
    realm: 'natpunch.test',
    getPassword: (u) => USERS[u],
    listUsers: () => Object.keys(USERS),
  });
  const nonce = auth.nonce(FROM);
  const offered = [
    { algorithm: 2, params: new Uint8Array(0) },
    { algorithm: 1, params: new Uint8Array(0) },
  ];
  const seed = encodeStun(
    {
      cls: StunClass.Request,
      method: StunMethod.Binding,
      transactionId: createTransactionId(),
      attributes: [
        attr(Username, 'alice'),
        attr(Realm, 'natpunch.test'),
        attr(Nonce, nonce),
        attr(PasswordAlgorithms, offered),
        attr(PasswordAlgorithmAttr, offered[0]!),
      ],
    },
    {
      integritySha256: longTermKey('alice', 'natpunch.test', 'correct horse', 'SHA-256'),
      integrity: longTermKey('alice', 'natpunch.test', 'correct horse', 'MD5'),
    },
  );
  let ok = 0;
  for (let n = 0; n < 5000; n++) {
    const buf = Buffer.from(seed);
    const flips = 1 + (n % 3);
    for (let k = 0; k < flips; k++) {
      const i = 20 + ((n * 7919 + k * 104729) % (buf.length - 20));
      buf[i] ^= 1 << ((n + k) % 8);
    }
    let msg;
    try {
      msg = decodeStun(buf);
    } catch {
      continue;
    }
    const r = auth.check(msg, FROM);
    if (r.ok) ok++;
  }
  // Every byte after the header is covered by the integrity check (padding included): no flip authenticates.
  assert.equal(ok, 0, `${ok} mutated requests authenticated`);
});
