import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { NatpunchError } from '../util/errors.js';
import { run } from './sys.js';

/**
 * The link delayer. This kernel has no `tc netem` and nft has no `queue` statement, but the iptables-nft NFQUEUE
 * target and the netlink queue are there. So delay and jitter come from a tiny userspace process speaking raw
 * netlink (nfnetlink_queue): the kernel hands it packet ids (metadata only, no payload copy), it holds each id for
 * delay ± jitter and then issues an NF_ACCEPT verdict. One process per namespace serves every queue there.
 *
 * It is C because Node has no netlink sockets; it is compiled on first use with the system's C compiler into a
 * cache directory (~/.cache/natpunch or $TMPDIR), keyed by a hash of the source, so it is built once per machine.
 *
 * Usage: delayer QUEUE:DELAY_US:JITTER_US [...]. Jitter is uniform in [-jitter, +jitter] per packet (packets can be
 * reordered, as with netem).
 */
export const DELAYER_SOURCE = String.raw`
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <linux/netlink.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXQ 64
#define HEAP_MAX 65536
struct qcfg { uint16_t num; int64_t delay_ns; int64_t jitter_ns; };
struct item { int64_t due; uint32_t id; uint16_t queue; };
static struct qcfg qs[MAXQ];
static int nq;
static struct item heap[HEAP_MAX];
static int hn;
static int fd;
static uint32_t seq;

static int64_t now_ns(void) {
  struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
static void push(struct item it) {
  int i = hn++;
  while (i > 0) { int p = (i - 1) / 2; if (heap[p].due <= it.due) break; heap[i] = heap[p]; i = p; }
  heap[i] = it;
}
static struct item pop(void) {
  struct item top = heap[0], last = heap[--hn];
  int i = 0;
  for (;;) {
    int c = 2 * i + 1; if (c >= hn) break;
    if (c + 1 < hn && heap[c + 1].due < heap[c].due) c++;
    if (last.due <= heap[c].due) break;
    heap[i] = heap[c]; i = c;
  }
  heap[i] = last;
  return top;
}
static size_t put_attr(char *buf, size_t off, uint16_t type, const void *data, uint16_t len) {
  struct nlattr *a = (struct nlattr *)(buf + off);
  a->nla_type = type; a->nla_len = NLA_HDRLEN + len;
  memcpy(buf + off + NLA_HDRLEN, data, len);
  return off + NLA_ALIGN(a->nla_len);
}
static size_t begin(char *buf, uint16_t msg, uint16_t queue, uint16_t flags) {
  struct nlmsghdr *nh = (struct nlmsghdr *)buf;
  nh->nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | msg; nh->nlmsg_flags = NLM_F_REQUEST | flags;
  nh->nlmsg_seq = ++seq; nh->nlmsg_pid = 0;
  struct nfgenmsg *g = (struct nfgenmsg *)NLMSG_DATA(nh);
  g->nfgen_family = AF_UNSPEC; g->version = NFNETLINK_V0; g->res_id = htons(queue);
  return NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(struct nfgenmsg));
}
static void sendmsg_or_die(char *buf, size_t len) {
  ((struct nlmsghdr *)buf)->nlmsg_len = len;
  struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
  if (sendto(fd, buf, len, 0, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != ENOBUFS) {
    perror("delayer: sendto"); exit(1);
  }
}
/* Waits for the ACK of request seq; returns the netlink error (0 = ok). */
static int wait_ack(uint32_t want) {
  static char abuf[8192];
  for (;;) {
    ssize_t n = recv(fd, abuf, sizeof abuf, 0);
    if (n < 0) { if (errno == EINTR || errno == ENOBUFS) continue; perror("delayer: recv ack"); exit(1); }
    for (struct nlmsghdr *nh = (struct nlmsghdr *)abuf; NLMSG_OK(nh, (size_t)n); nh = NLMSG_NEXT(nh, n)) {
      if (nh->nlmsg_type == NLMSG_ERROR && nh->nlmsg_seq == want) return ((struct nlmsgerr *)NLMSG_DATA(nh))->error;
    }
  }
}
/* Binds one queue; retries while a previous delayer still holds it (EBUSY until its socket is closed). */
static void config(uint16_t queue) {
  char buf[256];
  for (int attempt = 0;; attempt++) {
    size_t off = begin(buf, NFQNL_MSG_CONFIG, queue, NLM_F_ACK);
    struct nfqnl_msg_config_cmd cmd = { .command = NFQNL_CFG_CMD_BIND, .pf = htons(AF_INET) };
    off = put_attr(buf, off, NFQA_CFG_CMD, &cmd, sizeof cmd);
    sendmsg_or_die(buf, off);
    int err = wait_ack(seq);
    if (err == 0) break;
    if (err == -EBUSY && attempt < 100) { usleep(20000); continue; }
    fprintf(stderr, "delayer: cannot bind queue %u: %s\n", queue, strerror(-err)); exit(1);
  }
  size_t off = begin(buf, NFQNL_MSG_CONFIG, queue, NLM_F_ACK);
  struct nfqnl_msg_config_params params = { .copy_range = htonl(0), .copy_mode = NFQNL_COPY_META };
  off = put_attr(buf, off, NFQA_CFG_PARAMS, &params, sizeof params);
  uint32_t maxlen = htonl(16384);
  off = put_attr(buf, off, NFQA_CFG_QUEUE_MAXLEN, &maxlen, sizeof maxlen);
  sendmsg_or_die(buf, off);
  int err = wait_ack(seq);
  if (err) { fprintf(stderr, "delayer: cannot configure queue %u: %s\n", queue, strerror(-err)); exit(1); }
}
static void verdict(struct item it) {
  char buf[128]; size_t off = begin(buf, NFQNL_MSG_VERDICT, it.queue, 0);
  struct nfqnl_msg_verdict_hdr v = { .verdict = htonl(NF_ACCEPT), .id = htonl(it.id) };
  off = put_attr(buf, off, NFQA_VERDICT_HDR, &v, sizeof v);
  sendmsg_or_die(buf, off);
}
static struct qcfg *find(uint16_t num) {
  for (int i = 0; i < nq; i++) if (qs[i].num == num) return &qs[i];
  return NULL;
}
int main(int argc, char **argv) {
  for (int i = 1; i < argc && nq < MAXQ; i++) {
    unsigned q; long long d, j;
    if (sscanf(argv[i], "%u:%lld:%lld", &q, &d, &j) != 3) { fprintf(stderr, "delayer: bad arg %s\n", argv[i]); return 2; }
    qs[nq].num = (uint16_t)q; qs[nq].delay_ns = d * 1000; qs[nq].jitter_ns = j * 1000; nq++;
  }
  if (nq == 0) { fprintf(stderr, "usage: delayer QUEUE:DELAY_US:JITTER_US ...\n"); return 2; }
  srand((unsigned)now_ns() ^ (unsigned)getpid());
  fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
  if (fd < 0) { perror("delayer: socket"); return 1; }
  int rcv = 8 << 20; setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof rcv);
  struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) { perror("delayer: bind"); return 1; }
  for (int i = 0; i < nq; i++) config(qs[i].num);
  printf("ready\n"); fflush(stdout);
  static char buf[1 << 16];
  for (;;) {
    int64_t now = now_ns();
    while (hn > 0 && heap[0].due <= now) verdict(pop());
    struct timespec ts, *tp = NULL;
    if (hn > 0) { int64_t w = heap[0].due - now; ts.tv_sec = w / 1000000000LL; ts.tv_nsec = w % 1000000000LL; tp = &ts; }
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int r = ppoll(&pfd, 1, tp, NULL);
    if (r < 0) { if (errno == EINTR) continue; perror("delayer: poll"); return 1; }
    if (r == 0) continue;
    ssize_t n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n < 0) { if (errno == EAGAIN || errno == EINTR || errno == ENOBUFS) continue; perror("delayer: recv"); return 1; }
    now = now_ns();
    for (struct nlmsghdr *nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (size_t)n); nh = NLMSG_NEXT(nh, n)) {
      if (nh->nlmsg_type == NLMSG_ERROR) {
        /* An error here answers a verdict: the packet it named is gone (e.g. ENOENT after a conntrack flush while
           it waited, as lab.setNat does). Exiting would leave the queue unbound, and --queue-bypass would then let
           every later packet through undelayed: note it and go on. */
        struct nlmsgerr *e = (struct nlmsgerr *)NLMSG_DATA(nh);
        if (e->error) fprintf(stderr, "delayer: netlink error %d (ignored)\n", e->error);
        continue;
      }
      if (nh->nlmsg_type != ((NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET)) continue;
      struct nfgenmsg *g = (struct nfgenmsg *)NLMSG_DATA(nh);
      uint16_t queue = ntohs(g->res_id);
      char *p = (char *)g + NLMSG_ALIGN(sizeof *g);
      int rem = (int)nh->nlmsg_len - (int)(NLMSG_HDRLEN + NLMSG_ALIGN(sizeof *g));
      while (rem >= (int)NLA_HDRLEN) {
        struct nlattr *a = (struct nlattr *)p;
        if (a->nla_len < NLA_HDRLEN || a->nla_len > rem) break;
        if ((a->nla_type & NLA_TYPE_MASK) == NFQA_PACKET_HDR) {
          struct nfqnl_msg_packet_hdr *ph = (struct nfqnl_msg_packet_hdr *)(p + NLA_HDRLEN);
          struct item it = { .due = now, .id = ntohl(ph->packet_id), .queue = queue };
          struct qcfg *c = find(queue);
          if (c) {
            int64_t jit = c->jitter_ns > 0 ? (int64_t)(((double)rand() / RAND_MAX * 2.0 - 1.0) * (double)c->jitter_ns) : 0;
            int64_t d = c->delay_ns + jit; if (d < 0) d = 0;
            it.due = now + d;
          }
          if (hn < HEAP_MAX && it.due > now) push(it); else verdict(it);
          break;
        }
        rem -= NLA_ALIGN(a->nla_len); p += NLA_ALIGN(a->nla_len);
      }
    }
  }
}
`;

function cacheDir(): string {
  const base = process.env.XDG_CACHE_HOME || (homedir() ? join(homedir(), '.cache') : tmpdir());
  return join(base, 'natpunch');
}

/** Compiles the delayer once (cached by source hash) and returns the binary's path. */
export async function ensureDelayer(signal?: AbortSignal): Promise<string> {
  const hash = createHash('sha256').update(DELAYER_SOURCE).digest('hex').slice(0, 12);
  for (const dir of [cacheDir(), join(tmpdir(), 'natpunch-cache')]) {
    const bin = join(dir, `delayer-${hash}`);
    if (existsSync(bin)) return bin;
    try {
      mkdirSync(dir, { recursive: true });
    } catch {
      continue;
    }
    // unique names: concurrent builders (processes, or two namespaces of one lab) must not share files
    const unique = `${process.pid}-${randomBytes(4).toString('hex')}`;
    const src = join(dir, `delayer-${hash}.${unique}.c`);
    const tmp = `${bin}.${unique}.tmp`;
    writeFileSync(src, DELAYER_SOURCE);
    let last = '';
    for (const cc of ['cc', 'gcc', 'clang']) {
      try {
        const r = await run(cc, ['-O2', '-Wall', '-o', tmp, src], { timeoutMs: 60_000, ...(signal ? { signal } : {}) });
        if (r.code === 0) {
          renameSync(tmp, bin); // atomic: concurrent builders race harmlessly
          await run('rm', ['-f', src]);
          return bin;
        }
        last = r.stderr;
      } catch (err) {
        last = (err as Error).message;
      }
    }
    await run('rm', ['-f', src, tmp]);
    throw new NatpunchError(
      'LAB',
      `cannot compile the lab delayer (needs a C compiler: apt-get install gcc): ${last.slice(0, 400)}`,
    );
  }
  throw new NatpunchError('LAB', 'no writable cache directory for the lab delayer');
}
