/*
 * STUN Binding load generator for natpunch's benchmarks (bench/stun.bench.ts). One thread, non-blocking UDP,
 * sendmmsg/recvmmsg in batches of up to 256 over prebuilt requests, reads in rounds, so that it stays cheaper
 * than the server it measures: it reports its own CPU time and the harness flags runs where it used more than 80% of
 * its core.
 *
 *   stun-load <server-ip> <port> <seconds> <max-pps> <sockets> [window] [source-ip]
 *
 * Closed loop: at most <window> requests are unanswered at any time (spread over <sockets> source ports, so
 * SO_REUSEPORT servers spread them over workers). A request unanswered after 50 ms counts as lost and frees its slot.
 * So the server is kept saturated while the generator sends only what the server can take, instead of paying to send
 * datagrams the server's socket buffer will drop (an open-loop generator far above capacity spends most of its CPU
 * on those). <max-pps> caps the send rate (0: no cap); with a small cap and a large window it is an open-loop,
 * fixed-rate generator.
 *
 * Sends RFC 8489 section 6 Binding requests (20-byte header, 96-bit transaction id: a random per-run prefix and a
 * 64-bit counter) carrying a 32-byte SOFTWARE attribute (section 14.14; 56 bytes in all), as natpunch's own STUN
 * clients do: a request with room for its answer, which natpunch's server answers without its amplification budget
 * (a bare 20-byte request gets the RFC-required minimum only within a per-source budget) and coturn answers alike.
 * Counts Binding success responses (0x0101) to a request it sent and has not yet counted.
 * Prints one JSON line: sent, received, valid, lost, seconds (asked), elapsed (with the drain), cpu_user, cpu_sys.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Header (20) + SOFTWARE attribute header (4) + 32 bytes of value. */
#define REQUEST_BYTES 56
#define BATCH 256
#define MAX_SOCKETS 256
/* Request slots by counter: larger than the window and than what 50 ms at any rate this machine reaches leaves open. */
#define RING (1u << 20)
#define LOST_AFTER_NS 50000000ull
/* Between two rounds of reads: at 200k answers/s, ~40 answers per round; the window keeps the server busy meanwhile. */
#define POLL_NS 200000

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Send time per request slot (0: answered or expired). */
static uint64_t sent_at[RING];
static uint8_t out[BATCH][REQUEST_BYTES];
static uint8_t in[BATCH][256];
static struct mmsghdr smsg[BATCH], rmsg[BATCH];
static struct iovec siov[BATCH], riov[BATCH];

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s server-ip port seconds max-pps sockets [window] [source-ip]\n", argv[0]);
    return 2;
  }
  const char* server = argv[1];
  int port = atoi(argv[2]);
  double seconds = atof(argv[3]);
  double pps = atof(argv[4]);
  int nsock = atoi(argv[5]);
  long window = argc > 6 ? atol(argv[6]) : 4096;
  const char* source = argc > 7 ? argv[7] : "0.0.0.0";
  if (nsock < 1 || nsock > MAX_SOCKETS) nsock = 1;
  if (window < 1) window = 1;
  if (window > (long)(RING / 2)) window = RING / 2;

  struct sockaddr_in dst = {0};
  dst.sin_family = AF_INET;
  dst.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, server, &dst.sin_addr) != 1) return 2;

  int fds[MAX_SOCKETS];
  for (int i = 0; i < nsock; i++) {
    fds[i] = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    int buf = 4 << 20;
    setsockopt(fds[i], SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof(buf));
    setsockopt(fds[i], SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof(buf));
    struct sockaddr_in src = {0};
    src.sin_family = AF_INET;
    inet_pton(AF_INET, source, &src.sin_addr);
    if (bind(fds[i], (struct sockaddr*)&src, sizeof(src)) != 0) {
      perror("bind");
      return 1;
    }
  }

  uint32_t prefix;
  FILE* ur = fopen("/dev/urandom", "rb");
  if (!ur || fread(&prefix, 4, 1, ur) != 1) prefix = (uint32_t)getpid();
  if (ur) fclose(ur);

  /* Requests are built once; only the counter half of the transaction id changes per send. */
  for (int i = 0; i < BATCH; i++) {
    uint8_t* m = out[i];
    m[0] = 0x00; m[1] = 0x01; m[2] = 0; m[3] = 36;      /* Binding request, attributes: 36 bytes (RFC 8489 s5) */
    m[4] = 0x21; m[5] = 0x12; m[6] = 0xa4; m[7] = 0x42; /* magic cookie (RFC 8489 section 5) */
    memcpy(m + 8, &prefix, 4);
    m[20] = 0x80; m[21] = 0x22; m[22] = 0; m[23] = 32;  /* SOFTWARE, 32 bytes (RFC 8489 section 14.14) */
    memset(m + 24, 'x', 32);
    siov[i].iov_base = m;
    siov[i].iov_len = REQUEST_BYTES;
    smsg[i].msg_hdr.msg_name = &dst;
    smsg[i].msg_hdr.msg_namelen = sizeof(dst);
    smsg[i].msg_hdr.msg_iov = &siov[i];
    smsg[i].msg_hdr.msg_iovlen = 1;
    riov[i].iov_base = in[i];
    riov[i].iov_len = sizeof(in[i]);
    rmsg[i].msg_hdr.msg_iov = &riov[i];
    rmsg[i].msg_hdr.msg_iovlen = 1;
  }

  uint64_t counter = 0, oldest = 0, sent = 0, received = 0, valid = 0, lost = 0;
  long open = 0; /* requests sent, not answered, not expired */
  uint64_t start = now_ns();
  uint64_t end = start + (uint64_t)(seconds * 1e9);
  double credit = 0;
  uint64_t last = start;
  int turn = 0;
  int sending = 1;
  uint64_t drain_end = 0;
  for (;;) {
    uint64_t t = now_ns();
    if (sending && t >= end) {
      sending = 0;
      drain_end = t + 200000000ull; /* collect answers still in flight for up to 200 ms */
    }
    if (!sending && (t >= drain_end || open == 0)) break;
    /* Expire the oldest requests that went unanswered for LOST_AFTER_NS. */
    while (oldest < counter) {
      uint64_t s = sent_at[oldest & (RING - 1)];
      if (s != 0) {
        if (t - s < LOST_AFTER_NS && counter - oldest < RING) break;
        sent_at[oldest & (RING - 1)] = 0;
        lost++;
        open--;
      }
      oldest++;
    }
    if (sending) {
      long allowed = window - open;
      if (pps > 0) {
        credit += (double)(t - last) * pps / 1e9;
        if (credit > pps * 0.01) credit = pps * 0.01; /* never burst more than 10 ms of load after a stall */
        if ((double)allowed > credit) allowed = (long)credit;
      }
      last = t;
      while (allowed > 0) {
        int n = allowed >= BATCH ? BATCH : (int)allowed;
        for (int i = 0; i < n; i++) memcpy(out[i] + 12, &(uint64_t){counter + (uint64_t)i}, 8);
        int k = sendmmsg(fds[turn++ % nsock], smsg, (unsigned)n, 0);
        if (k <= 0) break; /* our own socket buffer is full: wait for answers */
        for (int i = 0; i < k; i++) sent_at[(counter + (uint64_t)i) & (RING - 1)] = t;
        counter += (uint64_t)k;
        sent += (uint64_t)k;
        open += k;
        allowed -= k;
        if (pps > 0) credit -= k;
      }
    }
    /* Sleep a little, then read every socket: answers are taken in batches however the server sends them (waking on
     * each datagram would cost the generator a syscall pair per answer against a server that sends one at a time). */
    struct timespec nap = {0, POLL_NS};
    nanosleep(&nap, NULL);
    for (int s = 0; s < nsock; s++) {
      for (;;) {
        int k = recvmmsg(fds[s], rmsg, BATCH, MSG_DONTWAIT, NULL);
        if (k <= 0) break;
        received += (uint64_t)k;
        for (int i = 0; i < k; i++) {
          const uint8_t* m = in[i];
          if (rmsg[i].msg_len < 20 || m[0] != 0x01 || m[1] != 0x01 || memcmp(m + 8, &prefix, 4) != 0) continue;
          uint64_t c;
          memcpy(&c, m + 12, 8);
          if (c < oldest || c >= counter || sent_at[c & (RING - 1)] == 0) continue;
          sent_at[c & (RING - 1)] = 0;
          valid++;
          open--;
        }
        if (k < BATCH) break;
      }
    }
  }
  lost += (uint64_t)open;
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("{\"sent\":%llu,\"received\":%llu,\"valid\":%llu,\"lost\":%llu,\"seconds\":%.3f,\"elapsed\":%.3f,"
         "\"cpu_user\":%.3f,\"cpu_sys\":%.3f}\n",
         (unsigned long long)sent, (unsigned long long)received, (unsigned long long)valid, (unsigned long long)lost,
         seconds, (double)(now_ns() - start) / 1e9, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
  return 0;
}
