/*
 * TURN relay load generator for natpunch's benchmarks (bench/turn.bench.ts), with its own echoing peer. One thread,
 * non-blocking UDP, sendmmsg/recvmmsg in batches, so that it stays cheaper than the server it measures; it reports
 * its own CPU time (the harness flags runs above 80% of its core).
 *
 *   turn-load <server-ip> <port> <user> <password> <peer-ip> <seconds> <clients> <bytes> <window> <max-pps> [gso]
 *
 * Set-up, once per client (RFC 8656, long-term credentials of RFC 8489 section 9.2): Allocate without credentials
 * (401 brings REALM and NONCE), Allocate again with USERNAME, REALM, NONCE, REQUESTED-TRANSPORT (UDP) and
 * MESSAGE-INTEGRITY (HMAC-SHA1 keyed with MD5(user:realm:password)), then ChannelBind channel 0x4000 to the peer's
 * address (which also installs the permission, RFC 8656 section 12.2). A 438 Stale Nonce is retried with the new
 * nonce.
 *
 * Measurement: each client sends ChannelData messages (RFC 8656 section 12.4: channel, length, <bytes> of data
 * carrying the client's index and a per-client counter) over its own socket; the peer socket echoes every datagram
 * back to the relayed address it came from; the server turns it into ChannelData to the client. Closed loop: at most
 * <window> messages (split over the clients) are unanswered at a time; one unanswered after 100 ms counts as lost and
 * frees its slot. <max-pps> (0: none) caps the clients' total send rate, for fixed-rate runs. Counted: sent, what the
 * peer received (relayed client->peer), valid echoes back at the clients (relayed peer->client), lost.
 * Prints one JSON line: sent, peer_received, received, lost, seconds, elapsed, cpu_user, cpu_sys, gso.
 *
 * With [gso] = 1 (the bench's default), the tool's own sends cost less: a client's burst of equal-sized ChannelData
 * messages, and the peer's echoes to one relayed address, leave in one sendmsg with UDP_SEGMENT (Linux 4.18+ UDP GSO)
 * instead of one datagram each through the stack. The kernel splits them on delivery, so the server still receives
 * separate datagrams and reads them as before; only the tool's per-datagram send work shrinks. Falls back to
 * sendmmsg where the kernel refuses it.
 * Needs libcrypto (OpenSSL) for MD5 and HMAC-SHA1; exit status 3 when the set-up fails (its reason on stderr).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <netinet/udp.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define BATCH 256
#define MAX_CLIENTS 64
#define MAX_BYTES 1400
#define RING (1u << 16)
#define LOST_AFTER_NS 100000000ull
#define POLL_NS 200000
#define CHANNEL 0x4000
#define MAGIC 0x2112a442u
/* Datagrams per GSO send: within every kernel's UDP_MAX_SEGMENTS (64 before Linux 5.x raised it) and 64 KiB. */
#define GSO_MAX_SEGS 64

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char* what) {
  fprintf(stderr, "turn-load: %s\n", what);
  exit(3);
}

/* ---------------------------------------------------------------------------------------------------------------
 * Set-up: a minimal STUN encoder/decoder for the three requests above. */

struct msg {
  uint8_t b[1024];
  size_t n;
};

static void put16(uint8_t* p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static unsigned get16(const uint8_t* p) { return ((unsigned)p[0] << 8) | p[1]; }

/* RFC 8489 section 5: header with a random transaction id. */
static void begin(struct msg* m, unsigned type) {
  memset(m->b, 0, 20);
  put16(m->b, type);
  m->b[4] = 0x21; m->b[5] = 0x12; m->b[6] = 0xa4; m->b[7] = 0x42;
  for (int i = 8; i < 20; i++) m->b[i] = (uint8_t)rand();
  m->n = 20;
}

/* RFC 8489 section 14: type, length, value padded to 4 bytes with zeros. */
static void attr(struct msg* m, unsigned type, const void* v, size_t len) {
  put16(m->b + m->n, type);
  put16(m->b + m->n + 2, (unsigned)len);
  memcpy(m->b + m->n + 4, v, len);
  size_t padded = (len + 3) & ~(size_t)3;
  memset(m->b + m->n + 4 + len, 0, padded - len);
  m->n += 4 + padded;
  put16(m->b + 2, (unsigned)(m->n - 20));
}

/* RFC 8489 section 14.5: HMAC-SHA1 over the message so far with the length covering the attribute itself. */
static void integrity(struct msg* m, const uint8_t key[16]) {
  put16(m->b + 2, (unsigned)(m->n - 20 + 24));
  uint8_t mac[20];
  unsigned maclen = 0;
  HMAC(EVP_sha1(), key, 16, m->b, m->n, mac, &maclen);
  attr(m, 0x0008, mac, 20);
}

/* RFC 8489 section 14.2: XOR-PEER-ADDRESS value for an IPv4 address. */
static void xor_addr(uint8_t v[8], const struct sockaddr_in* a) {
  v[0] = 0;
  v[1] = 1;
  put16(v + 2, ntohs(a->sin_port) ^ (MAGIC >> 16));
  uint32_t x = ntohl(a->sin_addr.s_addr) ^ MAGIC;
  v[4] = (uint8_t)(x >> 24); v[5] = (uint8_t)(x >> 16); v[6] = (uint8_t)(x >> 8); v[7] = (uint8_t)x;
}

/* Finds an attribute's value in a response; NULL when absent. */
static const uint8_t* find(const uint8_t* r, size_t n, unsigned type, size_t* len) {
  size_t o = 20;
  while (o + 4 <= n) {
    unsigned t = get16(r + o), l = get16(r + o + 2);
    if (o + 4 + l > n) return NULL;
    if (t == type) {
      *len = l;
      return r + o + 4;
    }
    o += 4 + ((l + 3) & ~3u);
  }
  return NULL;
}

/* Sends a request and waits (2 s at most, resending every 250 ms) for the response with its transaction id. */
static size_t transact(int fd, const struct msg* m, uint8_t* resp, size_t cap) {
  for (int attempt = 0; attempt < 8; attempt++) {
    if (send(fd, m->b, m->n, 0) < 0) die("send failed during set-up");
    uint64_t until = now_ns() + 250000000ull;
    for (;;) {
      uint64_t t = now_ns();
      if (t >= until) break;
      struct pollfd p = {.fd = fd, .events = POLLIN};
      if (poll(&p, 1, (int)((until - t) / 1000000) + 1) <= 0) continue;
      ssize_t k = recv(fd, resp, cap, MSG_DONTWAIT);
      if (k >= 20 && memcmp(resp + 8, m->b + 8, 12) == 0) return (size_t)k;
    }
  }
  return 0;
}

static unsigned error_code(const uint8_t* r, size_t n) {
  size_t len;
  const uint8_t* v = find(r, n, 0x0009, &len);
  return v && len >= 4 ? (v[2] & 7) * 100u + v[3] : 0;
}

struct creds {
  const char* user;
  char realm[256];
  uint8_t nonce[256];
  size_t nonce_len;
  uint8_t key[16];
  const char* password;
};

static void take_realm_nonce(struct creds* c, const uint8_t* r, size_t n) {
  size_t len;
  const uint8_t* realm = find(r, n, 0x0014, &len);
  if (!realm || len >= sizeof(c->realm)) die("401 without a usable REALM");
  memcpy(c->realm, realm, len);
  c->realm[len] = 0;
  const uint8_t* nonce = find(r, n, 0x0015, &len);
  if (!nonce || len > sizeof(c->nonce)) die("401 without a usable NONCE");
  memcpy(c->nonce, nonce, len);
  c->nonce_len = len;
  /* RFC 8489 section 9.2.2: key = MD5(username ":" realm ":" password). */
  char text[1024];
  int tl = snprintf(text, sizeof(text), "%s:%s:%s", c->user, c->realm, c->password);
  unsigned kl = 0;
  EVP_Digest(text, (size_t)tl, c->key, &kl, EVP_md5(), NULL);
}

static void sign(struct msg* m, const struct creds* c) {
  attr(m, 0x0006, c->user, strlen(c->user));
  attr(m, 0x0014, c->realm, strlen(c->realm));
  attr(m, 0x0015, c->nonce, c->nonce_len);
  integrity(m, c->key);
}

/* Allocate (RFC 8656 section 7.1) and ChannelBind (section 11.1) for one client socket. */
static void set_up(int fd, struct creds* c, const struct sockaddr_in* peer) {
  uint8_t resp[2048];
  uint8_t transport[4] = {17, 0, 0, 0}; /* REQUESTED-TRANSPORT: UDP (RFC 8656 section 18.8) */
  struct msg m;
  begin(&m, 0x0003);
  attr(&m, 0x0019, transport, 4);
  size_t n = transact(fd, &m, resp, sizeof(resp));
  if (n == 0) die("no answer to Allocate");
  if (get16(resp) != 0x0113 || error_code(resp, n) != 401) {
    fprintf(stderr, "turn-load: first Allocate was answered type 0x%04x error %u, not 401\n", get16(resp), error_code(resp, n));
    exit(3);
  }
  take_realm_nonce(c, resp, n);
  for (int attempt = 0; attempt < 2; attempt++) {
    begin(&m, 0x0003);
    attr(&m, 0x0019, transport, 4);
    sign(&m, c);
    n = transact(fd, &m, resp, sizeof(resp));
    if (n && get16(resp) == 0x0103) break;
    if (n && error_code(resp, n) == 438) {
      take_realm_nonce(c, resp, n);
      continue;
    }
    fprintf(stderr, "turn-load: Allocate failed (error %u)\n", n ? error_code(resp, n) : 0);
    exit(3);
  }
  uint8_t ch[4] = {CHANNEL >> 8, CHANNEL & 0xff, 0, 0};
  uint8_t xa[8];
  xor_addr(xa, peer);
  for (int attempt = 0; attempt < 2; attempt++) {
    begin(&m, 0x0009);
    attr(&m, 0x000c, ch, 4);
    attr(&m, 0x0012, xa, 8);
    sign(&m, c);
    n = transact(fd, &m, resp, sizeof(resp));
    if (n && get16(resp) == 0x0109) return;
    if (n && error_code(resp, n) == 438) {
      take_realm_nonce(c, resp, n);
      continue;
    }
    fprintf(stderr, "turn-load: ChannelBind failed (error %u)\n", n ? error_code(resp, n) : 0);
    exit(3);
  }
  die("ChannelBind failed");
}

/* ---------------------------------------------------------------------------------------------------------------
 * Measurement. */

struct client {
  int fd;
  uint64_t counter, oldest;
  long open;
  uint64_t sent_at[RING]; /* send time per counter slot; 0 once answered or expired */
};

static struct client clients[MAX_CLIENTS];
static uint8_t out[BATCH][4 + MAX_BYTES];
static uint8_t in[BATCH][2048];
static struct mmsghdr smsg[BATCH], rmsg[BATCH];
static struct iovec siov[BATCH], riov[BATCH];
static struct sockaddr_in from[BATCH];
static int use_gso;

/* One sendmsg of `n` equal-sized datagrams (the last may be shorter) to `to` (NULL: the connected peer) with
 * UDP_SEGMENT. Returns how many datagrams left: n, or 0 when the send buffer is full; -1 when GSO is refused. */
static int send_gso(int fd, struct iovec* iov, int n, size_t seg, struct sockaddr_in* to) {
  union {
    char buf[CMSG_SPACE(sizeof(uint16_t))];
    struct cmsghdr align;
  } ctl;
  struct msghdr mh;
  memset(&mh, 0, sizeof(mh));
  mh.msg_name = to;
  mh.msg_namelen = to ? sizeof(*to) : 0;
  mh.msg_iov = iov;
  mh.msg_iovlen = (size_t)n;
  if (n > 1) {
    memset(&ctl, 0, sizeof(ctl));
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    struct cmsghdr* cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_UDP;
    cm->cmsg_type = UDP_SEGMENT;
    cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    uint16_t s16 = (uint16_t)seg;
    memcpy(CMSG_DATA(cm), &s16, sizeof(s16));
  }
  if (sendmsg(fd, &mh, MSG_DONTWAIT) >= 0) return n;
  if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return 0;
  return -1;
}

int main(int argc, char** argv) {
  if (argc < 11) {
    fprintf(stderr, "usage: %s server-ip port user password peer-ip seconds clients bytes window max-pps\n", argv[0]);
    return 2;
  }
  struct sockaddr_in server = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
  if (inet_pton(AF_INET, argv[1], &server.sin_addr) != 1) return 2;
  struct creds base = {.user = argv[3], .password = argv[4]};
  struct sockaddr_in peer = {.sin_family = AF_INET};
  if (inet_pton(AF_INET, argv[5], &peer.sin_addr) != 1) return 2;
  double seconds = atof(argv[6]);
  int nclients = atoi(argv[7]);
  int bytes = atoi(argv[8]);
  long window = atol(argv[9]);
  double pps = atof(argv[10]);
  use_gso = argc > 11 && atoi(argv[11]) != 0;
  if (nclients < 1 || nclients > MAX_CLIENTS || bytes < 12 || bytes > MAX_BYTES) return 2;
  long per_client = window / nclients;
  if (per_client < 1) per_client = 1;
  if (per_client > (long)(RING / 2)) per_client = RING / 2;
  srand((unsigned)getpid() ^ (unsigned)now_ns());

  int buf = 4 << 20;
  int pfd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
  setsockopt(pfd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
  setsockopt(pfd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf));
  if (bind(pfd, (struct sockaddr*)&peer, sizeof(peer)) != 0) die("cannot bind the peer socket");
  socklen_t pl = sizeof(peer);
  getsockname(pfd, (struct sockaddr*)&peer, &pl);

  for (int i = 0; i < nclients; i++) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
    setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf));
    if (connect(fd, (struct sockaddr*)&server, sizeof(server)) != 0) die("cannot connect a client socket");
    struct creds c = base;
    set_up(fd, &c, &peer);
    clients[i].fd = fd;
  }

  for (int i = 0; i < BATCH; i++) {
    memset(out[i], 'x', sizeof(out[i]));
    put16(out[i], CHANNEL); /* RFC 8656 section 12.4: channel number, length, data */
    put16(out[i] + 2, (unsigned)bytes);
    siov[i].iov_base = out[i];
    siov[i].iov_len = 4 + (size_t)bytes;
    smsg[i].msg_hdr.msg_iov = &siov[i];
    smsg[i].msg_hdr.msg_iovlen = 1;
    riov[i].iov_base = in[i];
    riov[i].iov_len = sizeof(in[i]);
    rmsg[i].msg_hdr.msg_iov = &riov[i];
    rmsg[i].msg_hdr.msg_iovlen = 1;
  }

  uint64_t sent = 0, peer_received = 0, received = 0, lost = 0, peer_dropped = 0;
  uint64_t start = now_ns();
  uint64_t end = start + (uint64_t)(seconds * 1e9);
  uint64_t last = start, drain_end = 0;
  double credit = 0;
  int sending = 1;
  for (;;) {
    uint64_t t = now_ns();
    if (sending && t >= end) {
      sending = 0;
      drain_end = t + 200000000ull; /* answers still in flight: up to 200 ms */
    }
    long open = 0;
    for (int c = 0; c < nclients; c++) open += clients[c].open;
    if (!sending && (t >= drain_end || open == 0)) break;
    if (pps > 0) {
      credit += (double)(t - last) * pps / 1e9;
      if (credit > pps * 0.01) credit = pps * 0.01;
    }
    last = t;
    for (int ci = 0; ci < nclients; ci++) {
      struct client* c = &clients[ci];
      while (c->oldest < c->counter) {
        uint64_t s = c->sent_at[c->oldest & (RING - 1)];
        if (s != 0) {
          if (t - s < LOST_AFTER_NS && c->counter - c->oldest < RING) break;
          c->sent_at[c->oldest & (RING - 1)] = 0;
          lost++;
          c->open--;
        }
        c->oldest++;
      }
      if (!sending) continue;
      long allowed = per_client - c->open;
      if (pps > 0 && (double)allowed > credit) allowed = (long)credit;
      while (allowed > 0) {
        int n = allowed >= BATCH ? BATCH : (int)allowed;
        uint32_t idx = (uint32_t)ci;
        for (int i = 0; i < n; i++) {
          uint64_t k = c->counter + (uint64_t)i;
          memcpy(out[i] + 4, &idx, 4);
          memcpy(out[i] + 8, &k, 8);
        }
        int k = -1;
        if (use_gso) {
          int sent_now = 0;
          while (sent_now < n) {
            int part = n - sent_now > GSO_MAX_SEGS ? GSO_MAX_SEGS : n - sent_now;
            int g = send_gso(c->fd, siov + sent_now, part, 4 + (size_t)bytes, NULL);
            if (g < 0) {
              use_gso = 0; /* refused (no UDP GSO here): sendmmsg from now on */
              break;
            }
            if (g == 0) break;
            sent_now += g;
          }
          k = sent_now;
          if (!use_gso && k == 0) k = sendmmsg(c->fd, smsg, (unsigned)n, MSG_DONTWAIT);
        } else {
          k = sendmmsg(c->fd, smsg, (unsigned)n, MSG_DONTWAIT);
        }
        if (k <= 0) break; /* our socket buffer is full: wait for answers */
        for (int i = 0; i < k; i++) c->sent_at[(c->counter + (uint64_t)i) & (RING - 1)] = t;
        c->counter += (uint64_t)k;
        c->open += k;
        sent += (uint64_t)k;
        allowed -= k;
        if (pps > 0) credit -= k;
      }
    }
    struct timespec nap = {0, POLL_NS};
    nanosleep(&nap, NULL);
    /* The peer: echo every datagram to the relayed address it came from (RFC 8656 section 11.5's other side). */
    for (;;) {
      for (int i = 0; i < BATCH; i++) {
        rmsg[i].msg_hdr.msg_name = &from[i];
        rmsg[i].msg_hdr.msg_namelen = sizeof(from[i]);
      }
      int k = recvmmsg(pfd, rmsg, BATCH, MSG_DONTWAIT, NULL);
      if (k <= 0) break;
      peer_received += (uint64_t)k;
      struct mmsghdr echo[BATCH];
      struct iovec eiov[BATCH];
      for (int i = 0; i < k; i++) {
        eiov[i].iov_base = in[i];
        eiov[i].iov_len = rmsg[i].msg_len;
        memset(&echo[i], 0, sizeof(echo[i]));
        echo[i].msg_hdr.msg_name = &from[i];
        echo[i].msg_hdr.msg_namelen = sizeof(from[i]);
        echo[i].msg_hdr.msg_iov = &eiov[i];
        echo[i].msg_hdr.msg_iovlen = 1;
      }
      if (use_gso) {
        /* Group the echoes by relayed address (one per client); each group of equal-sized datagrams is one send. */
        static uint8_t done[BATCH];
        memset(done, 0, (size_t)k);
        for (int i = 0; i < k; i++) {
          if (done[i]) continue;
          struct iovec giov[GSO_MAX_SEGS];
          int g = 0;
          for (int j = i; j < k && g < GSO_MAX_SEGS; j++) {
            if (done[j] || from[j].sin_port != from[i].sin_port || from[j].sin_addr.s_addr != from[i].sin_addr.s_addr ||
                rmsg[j].msg_len != rmsg[i].msg_len)
              continue;
            done[j] = 1;
            giov[g++] = eiov[j];
          }
          int r = send_gso(pfd, giov, g, rmsg[i].msg_len, &from[i]);
          if (r < 0) {
            use_gso = 0;
            for (int x = 0; x < g; x++) {
              /* This group the slow way; later ones too. */
              struct msghdr one = {.msg_name = &from[i], .msg_namelen = sizeof(from[i]), .msg_iov = &giov[x], .msg_iovlen = 1};
              if (sendmsg(pfd, &one, MSG_DONTWAIT) < 0) peer_dropped++;
            }
            for (int j = i + 1; j < k; j++) {
              if (done[j]) continue;
              done[j] = 1;
              if (sendmmsg(pfd, &echo[j], 1, MSG_DONTWAIT) < 1) peer_dropped++;
            }
            break;
          }
          if (r == 0) peer_dropped += (uint64_t)g;
        }
      } else {
        int s = sendmmsg(pfd, echo, (unsigned)k, MSG_DONTWAIT);
        if (s < k) peer_dropped += (uint64_t)(k - (s > 0 ? s : 0));
      }
      if (k < BATCH) break;
    }
    for (int i = 0; i < BATCH; i++) rmsg[i].msg_hdr.msg_name = NULL;
    for (int ci = 0; ci < nclients; ci++) {
      struct client* c = &clients[ci];
      for (;;) {
        int k = recvmmsg(c->fd, rmsg, BATCH, MSG_DONTWAIT, NULL);
        if (k <= 0) break;
        for (int i = 0; i < k; i++) {
          const uint8_t* m = in[i];
          if (rmsg[i].msg_len < 16 || get16(m) != CHANNEL || get16(m + 2) != (unsigned)bytes) continue;
          uint32_t idx;
          uint64_t n;
          memcpy(&idx, m + 4, 4);
          memcpy(&n, m + 8, 8);
          if (idx != (uint32_t)ci || n < c->oldest || n >= c->counter || c->sent_at[n & (RING - 1)] == 0) continue;
          c->sent_at[n & (RING - 1)] = 0;
          c->open--;
          received++;
        }
        if (k < BATCH) break;
      }
    }
  }
  for (int c = 0; c < nclients; c++) lost += (uint64_t)clients[c].open;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("{\"sent\":%llu,\"peer_received\":%llu,\"received\":%llu,\"lost\":%llu,\"peer_dropped\":%llu,"
         "\"seconds\":%.3f,\"elapsed\":%.3f,\"cpu_user\":%.3f,\"cpu_sys\":%.3f,\"gso\":%d}\n",
         (unsigned long long)sent, (unsigned long long)peer_received, (unsigned long long)received,
         (unsigned long long)lost, (unsigned long long)peer_dropped, seconds, (double)(now_ns() - start) / 1e9,
         ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6, use_gso);
  return 0;
}
