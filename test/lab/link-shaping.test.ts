// Link conditions are applied for real: delay (userspace NFQUEUE delayer), loss (nft numgen), rate (tc tbf).
// Only generous lower bounds on time are asserted: that is behaviour (a delay exists), not speed.
import assert from 'node:assert/strict';
import { performance } from 'node:perf_hooks';
import { after, before, describe, test } from 'node:test';
import { Lab, labUnavailableReason, type Agent } from '../../src/lab/index.js';

const skip = labUnavailableReason();
if (skip) console.log(`# lab tests skipped: ${skip}`);

describe('link shaping', { skip }, () => {
  let lab: Lab;
  let server: Agent;
  let a: Agent;
  let b: Agent;
  let reflector: { sock: number; port: number };

  before(async () => {
    lab = await Lab.up({ links: { natA: { delayMs: 40 } } });
    [server, a, b] = await Promise.all(['server', 'a', 'b'].map((h) => lab.agent(h)));
    reflector = await server.udpBind({ reflect: true });
  });
  after(async () => {
    await lab?.down();
  });

  /** Smallest observed round trip over `n` exchanges (ms). */
  async function minRtt(agent: Agent, n = 3): Promise<number> {
    const { sock } = await agent.udpBind();
    let best = Infinity;
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      const r = await agent.udpExchange(sock, lab.addr('server'), reflector.port, { tries: 1, intervalMs: 5000 });
      assert.ok(r, 'no reply');
      best = Math.min(best, performance.now() - t0);
    }
    await agent.closeSocket(sock);
    return best;
  }

  test('delay given at start-up and changed at run time is applied in both directions', async () => {
    // 40 ms each way on natA's link: at least 80 ms round trip.
    const rtt1 = await minRtt(a);
    assert.ok(rtt1 >= 75, `round trip ${rtt1.toFixed(1)} ms with 2 × 40 ms delay`);
    await lab.setLink('natA', { delayMs: 100, jitterMs: 5 });
    const rtt2 = await minRtt(a);
    assert.ok(rtt2 >= 180, `round trip ${rtt2.toFixed(1)} ms with 2 × (100 ± 5) ms delay`);
    // the host link adds on top of the router link
    await lab.setLink('a', { delayMs: 30 });
    const rtt3 = await minRtt(a);
    assert.ok(rtt3 >= 240, `round trip ${rtt3.toFixed(1)} ms with 2 × (100 + 30) ms delay`);
    await lab.setLink('natA', { delayMs: 0, jitterMs: 0 });
    await lab.setLink('a', { delayMs: 0 });
    assert.deepEqual(lab.link('natA'), { delayMs: 0, jitterMs: 0, lossPct: 0, rateMbit: 0 });
    assert.deepEqual(lab.state.delayers, {}, 'no delayer runs once no link is delayed');
  });

  test('loss drops about the configured share of datagrams', async () => {
    const sink = await server.udpBind();
    const { sock } = await b.udpBind();
    // Counts arrivals until none came for 300 ms (bounded by 5 s) or all did.
    const send = async (n: number, tag: string) => {
      for (let i = 0; i < n; i++) await b.udpSend(sock, lab.addr('server'), sink.port, tag);
      let count = 0;
      const deadline = Date.now() + 5000;
      while (count < n && Date.now() < deadline) {
        const d = await server.nextUdp(sink.sock, (x) => x.data === tag, { timeoutMs: 300 }).catch(() => undefined);
        if (!d) break;
        count++;
      }
      return count;
    };
    await lab.setLink('natB', { lossPct: 50 });
    const half = await send(200, 'half');
    assert.ok(half >= 40 && half <= 160, `50% loss let ${half}/200 through`);
    await lab.setLink('natB', { lossPct: 100 });
    assert.equal(await send(20, 'all'), 0);
    await lab.setLink('natB', { lossPct: 0 });
    assert.equal(await send(20, 'none'), 20);
  });

  test('a rate limit slows a bulk TCP transfer down', async () => {
    await lab.setLink('b', { rateMbit: 1 });
    const listener = await server.tcpListen();
    const conn = await b.tcpConnect(lab.addr('server'), listener.port);
    assert.ok(conn.ok);
    const bytes = 200_000; // 1.6 Mbit: at least ~1.3 s at 1 Mbit/s after the initial burst
    const t0 = performance.now();
    await b.tcpSend(conn.conn, 'x'.repeat(bytes));
    let got = 0;
    while (got < bytes) {
      const m = await server.proc.next((x) => x.ev === 'tcp.data', { timeoutMs: 15_000 });
      got += String(m.data).length;
    }
    const elapsed = performance.now() - t0;
    assert.ok(elapsed >= 1000, `200 kB through a 1 Mbit/s link took only ${elapsed.toFixed(0)} ms`);
    await lab.setLink('b', { rateMbit: 0 });
  });
});
