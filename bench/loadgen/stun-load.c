/*
 * STUN Binding load generator for natpunch's benchmarks (bench/stun.bench.ts). Single thread, non-blocking UDP with
 * sendmmsg/recvmmsg so that it is never the bottleneck: it reports its own CPU time and the harness refuses results
 * where it used more than 80% of a core.
 *
 *   stun-load <server-ip> <port> <seconds> <offered-pps> <sockets> [source-ip]
 *
 * Sends RFC 8489 section 6 Binding requests (20-byte header, 96-bit transaction id: a random per-run prefix and a
 * counter) carrying a 32-byte SOFTWARE attribute (section 14.14; 56 bytes in all), as natpunch's own STUN clients do:
 * a request with room for its answer, which natpunch's server answers without its amplification budget (issue 18;
 * a bare 20-byte request gets the RFC-required minimum only within a per-source budget) and coturn answers alike.
 * At the offered rate, paced in 1 ms slices, spread over <sockets> source ports (so SO_REUSEPORT
 * servers spread them over workers), and counts Binding success responses (0x0101) whose transaction id it sent.
 * Prints one JSON line: sent, received, valid, seconds, cpu_user, cpu_sys.
 */
#define _GNU_SOURCE
/* Header (20) + SOFTWARE attribute header (4) + 32 bytes of value. */
#define REQUEST_BYTES 56
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_SOCKETS 256

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: %s server-ip port seconds offered-pps sockets [source-ip]\n", argv[0]);
    return 2;
  }
  const char* server = argv[1];
  int port = atoi(argv[2]);
  double seconds = atof(argv[3]);
  double pps = atof(argv[4]);
  int nsock = atoi(argv[5]);
  const char* source = argc > 6 ? argv[6] : "0.0.0.0";
  if (nsock < 1 || nsock > MAX_SOCKETS) nsock = 1;

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

  static uint8_t out[BATCH][REQUEST_BYTES];
  static uint8_t in[BATCH][128];
  struct mmsghdr smsg[BATCH], rmsg[BATCH];
  struct iovec siov[BATCH], riov[BATCH];
  uint64_t counter = 0, sent = 0, received = 0, valid = 0;

  double start = now_s();
  double end = start + seconds;
  double credit = 0;
  double last = start;
  int turn = 0;
  for (;;) {
    double t = now_s();
    if (t >= end) break;
    credit += (t - last) * pps;
    last = t;
    if (credit > pps * 0.01) credit = pps * 0.01; /* never burst more than 10 ms of load after a stall */
    while (credit >= 1) {
      int n = credit >= BATCH ? BATCH : (int)credit;
      for (int i = 0; i < n; i++) {
        uint8_t* m = out[i];
        m[0] = 0x00; m[1] = 0x01; m[2] = 0; m[3] = 36;              /* Binding request, attributes: 36 bytes */
        m[4] = 0x21; m[5] = 0x12; m[6] = 0xa4; m[7] = 0x42;         /* magic cookie (RFC 8489 section 5) */
        memcpy(m + 8, &prefix, 4);
        uint64_t c = counter++;
        memcpy(m + 12, &c, 8);
        m[20] = 0x80; m[21] = 0x22; m[22] = 0; m[23] = 32;          /* SOFTWARE, 32 bytes (RFC 8489 section 14.14) */
        memset(m + 24, 'x', 32);
        siov[i].iov_base = m;
        siov[i].iov_len = REQUEST_BYTES;
        memset(&smsg[i], 0, sizeof(smsg[i]));
        smsg[i].msg_hdr.msg_name = &dst;
        smsg[i].msg_hdr.msg_namelen = sizeof(dst);
        smsg[i].msg_hdr.msg_iov = &siov[i];
        smsg[i].msg_hdr.msg_iovlen = 1;
      }
      int fd = fds[turn++ % nsock];
      int k = sendmmsg(fd, smsg, n, 0);
      if (k <= 0) break; /* our own socket buffer is full: the pacing catches up */
      sent += k;
      credit -= k;
    }
    for (int s = 0; s < nsock; s++) {
      for (;;) {
        for (int i = 0; i < BATCH; i++) {
          riov[i].iov_base = in[i];
          riov[i].iov_len = sizeof(in[i]);
          memset(&rmsg[i], 0, sizeof(rmsg[i]));
          rmsg[i].msg_hdr.msg_iov = &riov[i];
          rmsg[i].msg_hdr.msg_iovlen = 1;
        }
        int k = recvmmsg(fds[s], rmsg, BATCH, MSG_DONTWAIT, NULL);
        if (k <= 0) break;
        received += k;
        for (int i = 0; i < k; i++) {
          uint8_t* m = in[i];
          if (rmsg[i].msg_len >= 20 && m[0] == 0x01 && m[1] == 0x01 && memcmp(m + 8, &prefix, 4) == 0) valid++;
        }
        if (k < BATCH) break;
      }
    }
    /* Sleep until the next batch is due or an answer arrives: the generator's CPU then follows its work. */
    double wait = (BATCH - credit) / pps;
    if (wait > 0.001) wait = 0.001;
    if (wait > 0) {
      struct pollfd pfd[MAX_SOCKETS];
      for (int s = 0; s < nsock; s++) {
        pfd[s].fd = fds[s];
        pfd[s].events = POLLIN;
      }
      struct timespec ts = {0, (long)(wait * 1e9)};
      ppoll(pfd, nsock, &ts, NULL);
    }
  }
  /* Collect answers still in flight for up to 200 ms. */
  double drain_end = now_s() + 0.2;
  while (now_s() < drain_end) {
    for (int s = 0; s < nsock; s++) {
      for (int i = 0; i < BATCH; i++) {
        riov[i].iov_base = in[i];
        riov[i].iov_len = sizeof(in[i]);
        memset(&rmsg[i], 0, sizeof(rmsg[i]));
        rmsg[i].msg_hdr.msg_iov = &riov[i];
        rmsg[i].msg_hdr.msg_iovlen = 1;
      }
      int k = recvmmsg(fds[s], rmsg, BATCH, MSG_DONTWAIT, NULL);
      if (k <= 0) continue;
      received += k;
      for (int i = 0; i < k; i++)
        if (rmsg[i].msg_len >= 20 && in[i][0] == 0x01 && in[i][1] == 0x01 && memcmp(in[i] + 8, &prefix, 4) == 0) valid++;
    }
    usleep(1000);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("{\"sent\":%llu,\"received\":%llu,\"valid\":%llu,\"seconds\":%.3f,\"cpu_user\":%.3f,\"cpu_sys\":%.3f}\n",
         (unsigned long long)sent, (unsigned long long)received, (unsigned long long)valid, seconds,
         ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
  return 0;
}
