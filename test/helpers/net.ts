// Network capabilities of the test machine (CI containers sometimes have no IPv6).
import dgram from 'node:dgram';
import net from 'node:net';

/** True when a UDP socket can bind ::1. Tests use it to skip their IPv6 half with a note instead of failing. */
export async function hasIPv6Loopback(): Promise<boolean> {
  const s = dgram.createSocket('udp6');
  s.on('error', () => {});
  try {
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(0, '::1', () => resolve());
    });
    return true;
  } catch {
    return false;
  } finally {
    try {
      s.close();
    } catch {
      /* never bound */
    }
  }
}

/** The loopback hosts to test on: 127.0.0.1 always, ::1 when available (logged when not). */
export async function loopbackHosts(): Promise<string[]> {
  if (await hasIPv6Loopback()) return ['127.0.0.1', '::1'];
  process.stderr.write('note: no IPv6 loopback (::1) on this machine; IPv6 cases skipped\n');
  return ['127.0.0.1'];
}

/** A port free for both UDP and TCP on 127.0.0.1 right now, below `below` (servers that also take port + 1 need room). */
export async function freePort(below = 65000): Promise<number> {
  for (let tries = 0; tries < 1000; tries++) {
    const u = dgram.createSocket('udp4');
    await new Promise<void>((r) => u.bind(0, '127.0.0.1', r));
    const port = u.address().port;
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    u.close();
    if (ok && port < below) return port;
  }
  throw new Error(`no free UDP+TCP port below ${below} on 127.0.0.1`);
}
