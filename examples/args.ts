// Shared by the examples: "HOST:PORT" → { host, port } (the default port is natpunch serve's, 3478).
export function hostPort(text: string | undefined, defaultPort = 3478): { host: string; port: number } {
  if (!text) {
    console.error('missing --rendezvous HOST:PORT (a `natpunch serve` both peers can reach)');
    process.exit(2);
  }
  const v6 = /^\[(.+)\](?::(\d+))?$/.exec(text);
  if (v6) return { host: v6[1]!, port: Number(v6[2] ?? defaultPort) };
  const [host, port] = text.split(':');
  return { host: host!, port: Number(port ?? defaultPort) };
}
