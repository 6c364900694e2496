// Where a server's RSS goes, for bench/rendezvous.bench.ts (BENCH_RDV_MEMTRACE=1; off by default). Loaded into the
// server with `node --import` (plain JavaScript: the server runs the compiled dist/, without tsx). Once a second it
// appends one JSON line to the file named by NATPUNCH_MEMTRACE_FILE: the RSS split by mapping (the node binary's
// pages, glibc's main heap, other files, anonymous memory: V8's heap, thread arenas) from /proc/self/smaps, V8's
// heap spaces (used and committed MiB) and the external / ArrayBuffer memory. It only reads: the timer is unref'd
// and costs about a millisecond a second, so the server otherwise runs as `natpunch serve` does.
import { appendFileSync, readFileSync } from 'node:fs';
import v8 from 'node:v8';

const file = process.env.NATPUNCH_MEMTRACE_FILE;
const MiB = 1048576;
const round = (x) => Math.round(x * 10) / 10;

/** RSS (MiB) by mapping kind. */
function rssByMapping() {
  const out = { node: 0, mallocHeap: 0, files: 0, anon: 0, other: 0 };
  let kind = 'anon';
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      const name = head[1];
      kind =
        name === ''
          ? 'anon'
          : name === '[heap]'
            ? 'mallocHeap'
            : name.startsWith('[')
              ? 'other'
              : name === process.execPath
                ? 'node'
                : 'files';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss) out[kind] += Number(rss[1]) / 1024;
  }
  for (const k of Object.keys(out)) out[k] = round(out[k]);
  return out;
}

function sample() {
  const spaces = {};
  for (const s of v8.getHeapSpaceStatistics()) {
    if (s.physical_space_size === 0) continue;
    spaces[s.space_name.replace(/_space$/, '')] = {
      used: round(s.space_used_size / MiB),
      committed: round(s.physical_space_size / MiB),
    };
  }
  const m = process.memoryUsage();
  return {
    at: Date.now(),
    rss: round(m.rss / MiB),
    byMapping: rssByMapping(),
    heapSpaces: spaces,
    external: round(m.external / MiB),
    arrayBuffers: round(m.arrayBuffers / MiB),
  };
}

if (file) setInterval(() => appendFileSync(file, `${JSON.stringify(sample())}\n`), 1000).unref();
