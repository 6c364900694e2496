/**
 * The operator dashboard: one self-contained page (no build step, no third-party content) served by the admin
 * endpoint at /. It reads /api/state over Server-Sent Events (/events) and the peer list from /api/peers.
 * Everything is written out in text (numbers, words and symbols), so it reads the same without colour; colour
 * only repeats what the text says. Laid out for a laptop screen (≥ 1280 px: two columns; narrower: one).
 */

/** The page, with `nonce` on its one style and one script element (the admin endpoint's CSP allows only those). */
export function dashboardHtml(nonce: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>natpunch serve</title>
<style nonce="${nonce}">
  :root { --fg: #1b1b1b; --muted: #5a5a5a; --line: #c8c8c8; --bg: #fff; --ok: #1d6b2f; --bad: #9b1c1c; }
  @media (prefers-color-scheme: dark) { :root { --fg: #e8e8e8; --muted: #a8a8a8; --line: #4a4a4a; --bg: #151515; --ok: #7bd88f; --bad: #ff8f8f; } }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: var(--bg); }
  header { display: flex; flex-wrap: wrap; gap: 0.5rem 1.5rem; align-items: baseline; padding: 0.75rem 1rem; border-bottom: 2px solid var(--line); }
  header h1 { font-size: 1.1rem; margin: 0; }
  header .meta { color: var(--muted); }
  main { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; padding: 1rem; }
  @media (max-width: 1100px) { main { grid-template-columns: 1fr; } }
  section { border: 1px solid var(--line); border-radius: 6px; padding: 0.75rem; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 1rem; margin: 0 0 0.5rem; }
  .tiles { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr)); gap: 0.5rem; }
  .tile { border: 1px solid var(--line); border-radius: 4px; padding: 0.4rem 0.6rem; }
  .tile b { display: block; font-size: 1.35rem; font-variant-numeric: tabular-nums; }
  .tile span { color: var(--muted); font-size: 0.85rem; }
  table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
  th, td { text-align: left; padding: 0.25rem 0.4rem; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { font-weight: 600; }
  td.num, th.num { text-align: right; }
  .scroll { max-height: 22rem; overflow: auto; }
  code { font-family: ui-monospace, "SF Mono", Menlo, Consolas, monospace; font-size: 0.85rem; }
  input[type=search] { width: 100%; padding: 0.35rem 0.5rem; font: inherit; color: inherit; background: transparent; border: 1px solid var(--line); border-radius: 4px; margin-bottom: 0.5rem; }
  .matrix td { min-width: 8.5rem; }
  .cell-rate { font-weight: 600; }
  .good { color: var(--ok); }
  .poor { color: var(--bad); }
  .muted { color: var(--muted); }
  .status-ok::before { content: "● "; } .status-bad::before { content: "✕ "; }
  .empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<header>
  <h1>natpunch serve</h1>
  <span class="meta" id="node">node …</span>
  <span class="meta" id="health" role="status">health …</span>
  <span class="meta" id="updated" aria-live="polite">connecting…</span>
</header>
<main>
  <section class="wide" aria-labelledby="h-summary">
    <h2 id="h-summary">Now</h2>
    <div class="tiles" id="tiles"></div>
  </section>
  <section aria-labelledby="h-matrix" class="wide">
    <h2 id="h-matrix">Success by NAT pair <span class="muted">(from peers' outcome reports; one count per connection)</span></h2>
    <div class="scroll" id="matrix"><p class="empty">No outcome reports yet.</p></div>
  </section>
  <section aria-labelledby="h-peers">
    <h2 id="h-peers">Registered peers <span class="muted" id="peer-count"></span></h2>
    <input type="search" id="peer-search" placeholder="Search by name or key" aria-label="Search peers by name or key" autocomplete="off">
    <div class="scroll"><table id="peers"><thead><tr><th>Name</th><th>Key</th><th>NAT type</th><th>Reach</th><th>Last seen</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section aria-labelledby="h-intros">
    <h2 id="h-intros">Introductions <span class="muted" id="intro-count"></span></h2>
    <div class="scroll"><table id="intros"><thead><tr><th>When</th><th>From</th><th>To</th><th>Where</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section aria-labelledby="h-relay">
    <h2 id="h-relay">Relay (TURN)</h2>
    <div id="relay"><p class="empty">TURN is not running on this node.</p></div>
  </section>
  <section aria-labelledby="h-errors">
    <h2 id="h-errors">Recent errors</h2>
    <div class="scroll"><table id="errors"><thead><tr><th>When</th><th>Request</th><th>Code</th><th>Message</th><th>From</th></tr></thead><tbody></tbody></table></div>
  </section>
</main>
<script nonce="${nonce}">
(() => {
  'use strict';
  const $ = (id) => document.getElementById(id);
  const text = (v) => (v === null || v === undefined ? '–' : String(v));
  const el = (tag, content, cls) => { const e = document.createElement(tag); if (content !== undefined) e.textContent = content; if (cls) e.className = cls; return e; };
  const pct = (x) => Math.round(x * 100) + '%';
  const ago = (t) => { const s = Math.max(0, Math.round((Date.now() - t) / 1000)); return s < 60 ? s + ' s ago' : s < 3600 ? Math.round(s / 60) + ' min ago' : Math.round(s / 3600) + ' h ago'; };
  const bytes = (n) => { const u = ['B', 'kB', 'MB', 'GB', 'TB']; let i = 0; while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; } return (i ? n.toFixed(1) : n) + ' ' + u[i]; };
  const fill = (tbody, rows) => { tbody.replaceChildren(...rows); };
  const note = (s, span) => { const td = el('td', s, 'empty'); td.colSpan = span; return td; };
  const codeTd = (s) => { const td = el('td'); td.append(el('code', s)); return td; };
  const row = (cells) => { const tr = document.createElement('tr'); for (const c of cells) tr.append(c instanceof Node ? c : el('td', text(c))); return tr; };

  function tiles(s) {
    const items = [
      ['registered', s.registrations, 'registered peers (all nodes)'],
      ['local', s.localPeers, 'peers held by this node'],
      ['intros', s.activeIntroductions, 'introductions, last 30 s'],
      ['lookups', s.lookups, 'lookups'],
      ['ratelimited', s.rateLimited, 'rate-limited messages'],
      ['allocations', s.turn ? s.turn.allocations : '–', 'relay allocations'],
      ['reports', s.reports, 'outcome reports'],
      ['stun', s.stunRequests, 'STUN requests'],
    ];
    $('tiles').replaceChildren(...items.map(([id, v, label]) => { const t = el('div', undefined, 'tile'); t.dataset.tile = id; t.append(el('b', text(v)), el('span', label)); return t; }));
  }

  function matrix(cells) {
    const host = $('matrix');
    if (!cells.length) { host.replaceChildren(el('p', 'No outcome reports yet.', 'empty')); return; }
    const types = [...new Set(cells.flatMap((c) => c.pair.split('/')))].sort();
    const byPair = new Map(cells.map((c) => [c.pair, c]));
    const table = el('table', undefined, 'matrix');
    const head = document.createElement('tr');
    head.append(el('th', 'NAT ↓ with →'), ...types.map((t) => el('th', t)));
    const thead = document.createElement('thead'); thead.append(head);
    const tbody = document.createElement('tbody');
    for (const a of types) {
      const tr = document.createElement('tr');
      tr.append(el('th', a));
      for (const b of types) {
        const key = [a, b].sort().join('/');
        const c = byPair.get(key);
        const td = document.createElement('td');
        td.dataset.pair = key;
        if (!c) { td.append(el('span', 'no data', 'muted')); }
        else {
          const rate = el('div', pct(c.successRate) + ' connected', 'cell-rate ' + (c.successRate >= 0.9 ? 'good' : c.successRate < 0.5 ? 'poor' : ''));
          td.dataset.attempts = String(c.attempts);
          td.append(rate,
            el('div', pct(c.directShare) + ' direct, ' + c.relayed + ' relayed'),
            el('div', 'median ' + (c.medianMs === null ? '–' : c.medianMs + ' ms')),
            el('div', c.connected + ' of ' + c.attempts + ' attempts', 'muted'));
        }
        tr.append(td);
      }
      tbody.append(tr);
    }
    table.append(thead, tbody);
    host.replaceChildren(table);
  }

  function relay(t) {
    if (!t) { $('relay').replaceChildren(el('p', 'TURN is not running on this node.', 'empty')); return; }
    const table = el('table');
    const tb = document.createElement('tbody');
    tb.append(
      row(['Allocations now', t.allocations]),
      row(['Allocations created', t.allocationsTotal]),
      row(['Client → peer', t.packetsToPeer + ' packets, ' + bytes(t.bytesToPeer)]),
      row(['Peer → client', t.packetsToClient + ' packets, ' + bytes(t.bytesToClient)]),
      row(['Permission denials', t.droppedNoPermission + t.deniedPeers]),
      row(['Authentication failures', t.authFailures]),
    );
    table.append(tb);
    $('relay').replaceChildren(table);
  }

  function render(st) {
    const s = st.summary;
    $('node').textContent = 'node ' + text(s.nodeId) + (s.redis ? ' · Redis ' + (s.redis.healthy ? 'up' : 'DOWN') : ' · in-memory registry');
    const h = $('health');
    h.textContent = st.health.ok ? 'healthy' : 'unhealthy: ' + Object.entries(st.health.checks).filter(([, c]) => !c.ok).map(([k, c]) => k + (c.detail ? ' (' + c.detail + ')' : '')).join(', ');
    h.className = 'meta ' + (st.health.ok ? 'status-ok' : 'status-bad');
    $('updated').textContent = 'updated ' + new Date(st.at).toLocaleTimeString();
    tiles({ ...s, activeIntroductions: st.activity.introductions.active, reports: st.activity.reports });
    $('peer-count').textContent = '(' + text(s.registrations) + ')';
    $('intro-count').textContent = '(' + st.activity.introductions.active + ' in the last 30 s)';
    matrix(st.activity.matrix);
    relay(s.turn);
    fill($('intros').tBodies[0], st.activity.introductions.recent.length
      ? st.activity.introductions.recent.map((i) => row([ago(i.at), codeTd(i.from + '…'), codeTd(i.to + '…'), i.remote ? 'via another node' : 'this node']))
      : [row([note('none in the last 30 s', 4)])]);
    fill($('errors').tBodies[0], st.activity.errors.length
      ? st.activity.errors.map((e) => row([ago(e.at), e.request, e.code, e.message, e.from]))
      : [row([note('none', 5)])]);
  }

  let query = '';
  let peersInFlight = false;
  async function peers() {
    if (peersInFlight) return;
    peersInFlight = true;
    try {
      const r = await fetch('/api/peers?limit=200&q=' + encodeURIComponent(query), { credentials: 'same-origin' });
      const { peers } = await r.json();
      fill($('peers').tBodies[0], peers.length
        ? peers.map((p) => { const tr = row([p.name || '(no name)', codeTd(p.key.slice(0, 16) + '…'), p.natType || 'not reported', p.reachable ? 'public' : 'behind NAT', ago(p.lastSeen)]); tr.dataset.key = p.key; if (p.name) tr.dataset.name = p.name; return tr; })
        : [row([note(query ? 'no peer matches "' + query + '"' : 'no peers registered', 5)])]);
    } catch { /* next update retries */ } finally { peersInFlight = false; }
  }
  $('peer-search').addEventListener('input', (e) => { query = e.target.value.trim().toLowerCase(); void peers(); });

  function connect() {
    const es = new EventSource('/events');
    es.addEventListener('state', (e) => render(JSON.parse(e.data)));
    es.addEventListener('peers', () => void peers());
    es.onerror = () => { $('updated').textContent = 'disconnected, retrying…'; };
  }
  connect();
  void peers();
  setInterval(() => void peers(), 5000);
})();
</script>
</body>
</html>
`;
}
