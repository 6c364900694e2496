// What socket buffer sizes a process can get on this machine: Linux caps SO_RCVBUF/SO_SNDBUF requests at
// net.core.rmem_max/wmem_max (208 KiB on many distributions), so the stream benches record them next to the numbers.
import { readFileSync } from 'node:fs';

export function socketBufferCaps(): { rmemMax: number; wmemMax: number } | null {
  try {
    const read = (f: string) => Number(readFileSync(`/proc/sys/net/core/${f}`, 'utf8').trim());
    return { rmemMax: read('rmem_max'), wmemMax: read('wmem_max') };
  } catch {
    return null;
  }
}
