// natpunch native addon: the few socket calls Node 20 does not expose.
//
//   * TCP sockets with SO_REUSEADDR + SO_REUSEPORT set before bind, so one local port can listen and make several
//     outgoing connections at once (P2P-NAT TCP hole punching, Ford/Srisuresh/Kegel 2005, RFC 5128 section 4).
//   * Non-blocking connect; completion is observed with an FdWatcher (a uv_poll_t on Node's own event loop), and
//     the connected fd is then handed to `new net.Socket({ fd })`.
//   * IP_TTL / IPV6_UNICAST_HOPS get and set on any socket fd (STUNT low-TTL SYNs, TTL discovery).
//   * Raw sockets (SOCK_RAW, needs CAP_NET_RAW): ICMP send/receive, with the source address.
//   * Batched UDP server sockets (BatchUdp): recvmmsg(2) reads up to a batch of datagrams per wake-up into one
//     slab and JavaScript is called once per batch; replies queued during that call (or in the same loop turn) leave
//     in one sendmmsg(2). One syscall per batch each way instead of one per datagram.
//   * Packet capture sockets (AF_PACKET, SOCK_DGRAM, needs CAP_NET_RAW): the IPv4 packets this host sends, so the
//     sequence-number techniques (STUNT #1, NATBlaster) can read the ISN and options of the kernel's own SYN. An
//     IPv4 raw socket only ever receives inbound packets (raw(7)); a packet socket also sees PACKET_OUTGOING ones.
//
// Every function works on plain file descriptors and is synchronous and non-blocking; waiting is done by FdWatcher.
// Errors are thrown as Error objects with `code` (e.g. 'EADDRINUSE'), `errno` (negative, libuv style) and `syscall`.

#include <napi.h>
#include <uv.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <vector>
#include <unordered_map>
#include <unordered_set>
#include <stdio.h>

namespace {

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall) {
  const char* name = uv_err_name(-err);
  std::string msg = std::string(syscall) + " " + name + " (" + strerror(err) + ")";
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, name));
  e.Set("errno", Napi::Number::New(env, -err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall) { throw ErrnoError(env, err, syscall); }

int ArgInt(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  return info[i].As<Napi::Number>().Int32Value();
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// Parses a numeric IPv4/IPv6 address (no name resolution) into a sockaddr.
socklen_t ParseAddress(Napi::Env env, const std::string& address, int port, sockaddr_storage* out) {
  memset(out, 0, sizeof(*out));
  if (port < 0 || port > 65535) throw Napi::RangeError::New(env, "port must be 0..65535");
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (inet_pton(AF_INET, address.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    return sizeof(sockaddr_in);
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  std::string a = address;
  uint32_t scope = 0;
  size_t pct = a.find('%');
  if (pct != std::string::npos) {
    scope = if_nametoindex(a.substr(pct + 1).c_str());
    a = a.substr(0, pct);
  }
  if (inet_pton(AF_INET6, a.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    v6->sin6_scope_id = scope;
    return sizeof(sockaddr_in6);
  }
  throw Napi::TypeError::New(env, "not a numeric IP address: " + address);
}

Napi::Object AddressObject(Napi::Env env, const sockaddr_storage& ss) {
  Napi::Object o = Napi::Object::New(env);
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof(buf));
    o.Set("address", buf);
    o.Set("port", ntohs(v4->sin_port));
    o.Set("family", "IPv4");
  } else if (ss.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof(buf));
    o.Set("address", buf);
    o.Set("port", ntohs(v6->sin6_port));
    o.Set("family", "IPv6");
  } else {
    o.Set("address", "");
    o.Set("port", 0);
    o.Set("family", "unknown");
  }
  return o;
}

int SocketFamily(Napi::Env env, int fd) {
  int domain = 0;
  socklen_t len = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) ThrowErrno(env, errno, "getsockopt");
  return domain;
}

// tcpSocket(family: 4 | 6) -> fd. Non-blocking, close-on-exec, SO_REUSEADDR and SO_REUSEPORT set before any bind.
Napi::Value TcpSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = ArgInt(info, 0, "family") == 6 ? AF_INET6 : AF_INET;
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "setsockopt");
  }
  return Napi::Number::New(env, fd);
}

// rawSocket(family: 4 | 6, protocol: number, headerIncluded: boolean) -> fd. SOCK_RAW needs CAP_NET_RAW.
Napi::Value RawSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = ArgInt(info, 0, "family") == 6 ? AF_INET6 : AF_INET;
  int protocol = ArgInt(info, 1, "protocol");
  bool hdrincl = info.Length() > 2 && info[2].ToBoolean().Value();
  int fd = socket(family, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  if (hdrincl && family == AF_INET) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_IP, IP_HDRINCL, &one, sizeof(one)) != 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, err, "setsockopt");
    }
  }
  return Napi::Number::New(env, fd);
}

// packetSocket(ifindex: number, tcpPort?: number) -> fd. AF_PACKET/SOCK_DGRAM (no link-layer header), bound to one interface (0 = all).
// Needs CAP_NET_RAW. Non-blocking, close-on-exec. It listens for ETH_P_ALL because Linux hands OUTGOING packets only
// to ETH_P_ALL taps (dev_queue_xmit_nit); recvPacket skips everything that is not IPv4. With tcpPort, a classic BPF
// filter keeps only TCP segments from or to that port, so a busy host does not wake us for every packet.
Napi::Value PacketSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int ifindex = ArgInt(info, 0, "ifindex");
  int fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, htons(ETH_P_ALL));
  if (fd < 0) ThrowErrno(env, errno, "socket");
  int tcpPort = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
  if (tcpPort < 0 || tcpPort > 65535) {
    close(fd);
    throw Napi::RangeError::New(env, "tcpPort must be 0..65535");
  }
  if (tcpPort > 0) {
    // On a SOCK_DGRAM packet socket the filter sees the packet from its network header on.
    sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 9),                                  // IPv4 protocol
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 6),
        BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 0),                                 // X = IPv4 header length
        BPF_STMT(BPF_LD | BPF_H | BPF_IND, 0),                                  // TCP source port
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(tcpPort), 2, 0),
        BPF_STMT(BPF_LD | BPF_H | BPF_IND, 2),                                  // TCP destination port
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(tcpPort), 0, 1),
        BPF_STMT(BPF_RET | BPF_K, 0x40000),                                     // accept
        BPF_STMT(BPF_RET | BPF_K, 0),                                           // drop
    };
    sock_fprog prog = {static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) != 0) {
      int err = errno;
      close(fd);
      ThrowErrno(env, err, "setsockopt");
    }
  }
  sockaddr_ll sll;
  memset(&sll, 0, sizeof(sll));
  sll.sll_family = AF_PACKET;
  sll.sll_protocol = htons(ETH_P_ALL);
  sll.sll_ifindex = ifindex;
  if (bind(fd, reinterpret_cast<sockaddr*>(&sll), sizeof(sll)) != 0) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "bind");
  }
  return Napi::Number::New(env, fd);
}

// recvPacket(fd, maxBytes) -> { data, outgoing, ifindex } or null when nothing is queued. For packet sockets.
Napi::Value RecvPacket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  int max = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 65535;
  if (max < 1 || max > 65535) max = 65535;
  std::string buf(static_cast<size_t>(max), '\0');
  sockaddr_ll sll;
  socklen_t len;
  ssize_t n;
  for (int skipped = 0;; skipped++) {
    len = sizeof(sll);
    n = recvfrom(fd, &buf[0], buf.size(), 0, reinterpret_cast<sockaddr*>(&sll), &len);
    if (n < 0 && errno == EINTR) continue;
    // Not IPv4 (ARP, IPv6...): skip, a bounded number of times per call (the poll stays readable for the rest).
    if (n >= 0 && sll.sll_protocol != htons(ETH_P_IP)) {
      if (skipped < 64) continue;
      return env.Null();
    }
    break;
  }
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowErrno(env, errno, "recvfrom");
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("data", Napi::Buffer<char>::Copy(env, buf.data(), static_cast<size_t>(n)));
  o.Set("outgoing", Napi::Boolean::New(env, sll.sll_pkttype == PACKET_OUTGOING));
  o.Set("ifindex", Napi::Number::New(env, sll.sll_ifindex));
  return o;
}

// bind(fd, address, port)
Napi::Value Bind(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  sockaddr_storage ss;
  socklen_t len = ParseAddress(env, ArgString(info, 1, "address"), ArgInt(info, 2, "port"), &ss);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) ThrowErrno(env, errno, "bind");
  return env.Undefined();
}

// listen(fd, backlog)
Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (listen(ArgInt(info, 0, "fd"), ArgInt(info, 1, "backlog")) != 0) ThrowErrno(env, errno, "listen");
  return env.Undefined();
}

// connect(fd, address, port) -> true when connected at once, false when in progress (EINPROGRESS).
Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  sockaddr_storage ss;
  socklen_t len = ParseAddress(env, ArgString(info, 1, "address"), ArgInt(info, 2, "port"), &ss);
  int rc;
  do {
    rc = connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  } while (rc != 0 && errno == EINTR);
  if (rc == 0) return Napi::Boolean::New(env, true);
  if (errno == EINPROGRESS || errno == EALREADY) return Napi::Boolean::New(env, false);
  ThrowErrno(env, errno, "connect");
}

// socketError(fd) -> null or an error code string (SO_ERROR, which also clears it).
Napi::Value SocketError(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) ThrowErrno(env, errno, "getsockopt");
  if (err == 0) return env.Null();
  return Napi::String::New(env, uv_err_name(-err));
}

Napi::Value GetSockName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getsockname(ArgInt(info, 0, "fd"), reinterpret_cast<sockaddr*>(&ss), &len) != 0) ThrowErrno(env, errno, "getsockname");
  return AddressObject(env, ss);
}

// getPeerName(fd) -> address object, or null when not connected (ENOTCONN).
Napi::Value GetPeerName(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (getpeername(ArgInt(info, 0, "fd"), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    if (errno == ENOTCONN) return env.Null();
    ThrowErrno(env, errno, "getpeername");
  }
  return AddressObject(env, ss);
}

// setTtl(fd, ttl): IP_TTL on IPv4 sockets, IPV6_UNICAST_HOPS on IPv6 ones. Takes effect for the next packet sent,
// including retransmitted SYNs and the SYN-ACK of a simultaneous open.
Napi::Value SetTtl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  int ttl = ArgInt(info, 1, "ttl");
  if (ttl < 1 || ttl > 255) throw Napi::RangeError::New(env, "ttl must be 1..255");
  int rc = SocketFamily(env, fd) == AF_INET6 ? setsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, sizeof(ttl))
                                              : setsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, sizeof(ttl));
  if (rc != 0) ThrowErrno(env, errno, "setsockopt");
  return env.Undefined();
}

Napi::Value GetTtl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  int ttl = 0;
  socklen_t len = sizeof(ttl);
  int rc = SocketFamily(env, fd) == AF_INET6 ? getsockopt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, &ttl, &len)
                                              : getsockopt(fd, IPPROTO_IP, IP_TTL, &ttl, &len);
  if (rc != 0) ThrowErrno(env, errno, "getsockopt");
  return Napi::Number::New(env, ttl);
}

// sendTo(fd, buffer, address, port) -> bytes sent, or -1 when the socket buffer is full (EAGAIN).
Napi::Value SendTo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  if (info.Length() < 2 || !info[1].IsTypedArray()) throw Napi::TypeError::New(env, "data must be a Uint8Array");
  Napi::Uint8Array data = info[1].As<Napi::Uint8Array>();
  sockaddr_storage ss;
  int port = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : 0;
  socklen_t len = ParseAddress(env, ArgString(info, 2, "address"), port, &ss);
  ssize_t n;
  do {
    n = sendto(fd, data.Data(), data.ByteLength(), 0, reinterpret_cast<sockaddr*>(&ss), len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "sendto");
  }
  return Napi::Number::New(env, static_cast<double>(n));
}

// recvFrom(fd, maxBytes) -> { data, address, port, family } or null when nothing is queued (EAGAIN).
Napi::Value RecvFrom(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  int max = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 65535;
  if (max < 1 || max > 65535) max = 65535;
  std::string buf(static_cast<size_t>(max), '\0');
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  ssize_t n;
  do {
    len = sizeof(ss);
    n = recvfrom(fd, &buf[0], buf.size(), 0, reinterpret_cast<sockaddr*>(&ss), &len);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return env.Null();
    ThrowErrno(env, errno, "recvfrom");
  }
  Napi::Object o = AddressObject(env, ss);
  o.Set("data", Napi::Buffer<char>::Copy(env, buf.data(), static_cast<size_t>(n)));
  return o;
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (close(ArgInt(info, 0, "fd")) != 0 && errno != EINTR) ThrowErrno(env, errno, "close");
  return env.Undefined();
}

// FdWatcher: a uv_poll_t on Node's event loop. new FdWatcher(fd, (status, events) => {}); start(events); stop();
// close(). events: 1 = readable, 2 = writable (UV_READABLE / UV_WRITABLE). The watcher never closes the fd.
class FdWatcher : public Napi::ObjectWrap<FdWatcher> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "FdWatcher",
                       {InstanceMethod("start", &FdWatcher::Start), InstanceMethod("stop", &FdWatcher::Stop),
                        InstanceMethod("close", &FdWatcher::Close), InstanceMethod("ref", &FdWatcher::Ref),
                        InstanceMethod("unref", &FdWatcher::Unref)});
  }

  explicit FdWatcher(const Napi::CallbackInfo& info) : Napi::ObjectWrap<FdWatcher>(info) {
    Napi::Env env = info.Env();
    int fd = ArgInt(info, 0, "fd");
    if (info.Length() < 2 || !info[1].IsFunction()) throw Napi::TypeError::New(env, "callback must be a function");
    callback_ = Napi::Persistent(info[1].As<Napi::Function>());
    context_ = new Napi::AsyncContext(env, "natpunch:FdWatcher");
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop");
    handle_ = new uv_poll_t;
    int rc = uv_poll_init_socket(loop, handle_, fd);
    if (rc != 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowErrno(env, -rc, "uv_poll_init");
    }
    handle_->data = this;
    env_ = env;
  }

  ~FdWatcher() override {
    CloseHandle();
    delete context_;
  }

 private:
  static void OnPoll(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<FdWatcher*>(h->data);
    if (self == nullptr) return;
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    try {
      self->callback_.MakeCallback(env.Global(), {Napi::Number::New(env, status), Napi::Number::New(env, events)},
                                   *self->context_);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(env, e.Value());
    }
  }

  void CloseHandle() {
    if (handle_ == nullptr) return;
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (handle_ == nullptr) throw Napi::Error::New(env, "FdWatcher is closed");
    int events = ArgInt(info, 0, "events") & (UV_READABLE | UV_WRITABLE);
    int rc = uv_poll_start(handle_, events, OnPoll);
    if (rc != 0) ThrowErrno(env, -rc, "uv_poll_start");
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_poll_stop(handle_);
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    CloseHandle();
    return info.Env().Undefined();
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::FunctionReference callback_;
  Napi::AsyncContext* context_ = nullptr;
  uv_poll_t* handle_ = nullptr;
  napi_env env_ = nullptr;
};


// udpSocket(family: 4 | 6, ipv6Only: boolean, reusePort: boolean) -> fd. Non-blocking, close-on-exec.
// reusePort lets several workers bind the same port (the kernel spreads datagrams by 4-tuple hash, so one client's
// packets always reach the same worker; Linux only lets sockets of the same user join the group).
Napi::Value UdpSocket(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int family = ArgInt(info, 0, "family") == 6 ? AF_INET6 : AF_INET;
  bool v6only = info.Length() > 1 && info[1].ToBoolean().Value();
  bool reuse = info.Length() > 2 && info[2].ToBoolean().Value();
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) ThrowErrno(env, errno, "socket");
  int one = 1;
  int v = v6only ? 1 : 0;
  if ((family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof(v)) != 0) ||
      (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)) {
    int err = errno;
    close(fd);
    ThrowErrno(env, err, "setsockopt");
  }
  return Napi::Number::New(env, fd);
}

// setSocketBuffers(fd, recvBytes, sendBytes) -> { recv, send } as the kernel reports them afterwards (Linux doubles
// the request for its bookkeeping). SO_RCVBUFFORCE/SO_SNDBUFFORCE (CAP_NET_ADMIN) go past net.core.rmem_max and
// wmem_max; without the capability the plain options apply, capped by those sysctls.
Napi::Value SetSocketBuffers(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  int rcv = ArgInt(info, 1, "recvBytes");
  int snd = ArgInt(info, 2, "sendBytes");
  if (rcv > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcv, sizeof(rcv)) != 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
  if (snd > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &snd, sizeof(snd)) != 0) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd));
  int got = 0;
  socklen_t len = sizeof(got);
  Napi::Object o = Napi::Object::New(env);
  if (getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &got, &len) != 0) ThrowErrno(env, errno, "getsockopt");
  o.Set("recv", got);
  len = sizeof(got);
  if (getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &got, &len) != 0) ThrowErrno(env, errno, "getsockopt");
  o.Set("send", got);
  return o;
}

// steerToFirst(fd, firstByte): a classic BPF program on the SO_REUSEPORT group of fd (SO_ATTACH_REUSEPORT_CBPF,
// Linux 4.5+). Datagrams whose first payload byte is `firstByte` go to the group's first socket (index 0: the one
// bound first); every other datagram gets an out-of-range index, which makes the kernel fall back to its 4-tuple
// hash. natpunch uses it to send every rendezvous datagram (0xF0) to the worker that owns the registry.
Napi::Value SteerToFirst(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  int first = ArgInt(info, 1, "firstByte");
  if (first < 0 || first > 255) throw Napi::RangeError::New(env, "firstByte must be 0..255");
  // The program runs with the packet data starting at the UDP payload (the kernel pulls the UDP header first).
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(first), 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0),
      BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
  };
  sock_fprog prog = {static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0) ThrowErrno(env, errno, "setsockopt");
  return env.Undefined();
}

// steerBindingsOnly(fd): the SO_REUSEPORT group program for a server whose TURN state lives in one thread (the peer
// relay's scopes come from the rendezvous' introductions, main thread). Only STUN Binding requests (message type
// 0x0001, RFC 8489 §5: the first two bytes of the header) are spread by the kernel's 4-tuple hash (out-of-range
// index); every other datagram (rendezvous 0xF0, TURN requests and indications, ChannelData, RFC 8656 §12) goes to
// the group's first socket. Binding is stateless, so which thread answers it does not matter.
Napi::Value SteerBindingsOnly(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgInt(info, 0, "fd");
  // As in SteerToFirst, the data starts at the UDP payload. A datagram shorter than two bytes aborts the program,
  // which returns 0 (the first socket), where it is dropped as malformed.
  sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x0001u, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  sock_fprog prog = {static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0) ThrowErrno(env, errno, "setsockopt");
  return env.Undefined();
}

// BatchUdp: a batched reader/writer on a bound, non-blocking UDP fd.
//   new BatchUdp(fd, meta: Uint32Array, onBatch: (slab: Buffer, count: number) => void, batchSize)
// On readable, recvmmsg reads up to batchSize datagrams (at most kReadRounds times per wake-up, so one socket cannot
// starve the loop), copies them back to back into a slab Buffer and calls onBatch once per recvmmsg. meta holds, per
// datagram i, kMetaStride u32 values: [offset, length, port, family (4|6), address words (network order)...].
// The slab is never rewritten: each datagram is a distinct region, so JavaScript may keep views of it; a new slab is
// allocated when the current one is full (the old one lives while views of it do).
// queue(data, address, port) copies a datagram into the send arena; flush() sends the queue with sendmmsg. The queue
// is also flushed after every onBatch call (replies to a batch leave together) and when it is full. A datagram the
// kernel refuses (EAGAIN: send buffer full; EMSGSIZE; unreachable) is dropped, as UDP would, and counted.
// Optional 5th and 6th arguments: the slab and send-arena sizes (default 1 MiB each). TURN relay sockets, one per
// allocation, pass small ones so thousands of allocations do not hold megabytes each.
constexpr int kMetaStride = 8;
constexpr size_t kMaxDatagram = 65536;
constexpr size_t kSlabBytes = 1 << 20;
constexpr size_t kSendArenaBytes = 1 << 20;
constexpr int kReadRounds = 4;
// msg_len of a datagram the relay fast path forwarded (never a real length: datagrams are at most 64 KiB).
constexpr unsigned kRouted = 0xffffffffu;

// The receive scratch (one 64 KiB slot per datagram of a batch) is used only inside one synchronous read round and
// copied out before JavaScript runs, so every BatchUdp of a thread shares one; a worker thread gets its own.
struct ReadScratch {
  uint8_t* data = nullptr;
  int slots = 0;
  ~ReadScratch() { free(data); }
  uint8_t* Get(int batch) {
    if (batch > slots) {
      uint8_t* grown = static_cast<uint8_t*>(realloc(data, static_cast<size_t>(batch) * kMaxDatagram));
      if (grown == nullptr) return nullptr;
      data = grown;
      slots = batch;
    }
    return data;
  }
};
thread_local ReadScratch tScratch;

// TURN relay fast path (RFC 8656 section 12). Once TurnServer has bound a channel and checked its permission, the
// two forwarding rules it applies to every packet of that channel are fixed until the binding or permission changes:
//   * ChannelData from client C with channel N on the server socket  ->  its data, sent from the allocation's relay
//     socket to the channel's peer P (section 12.6);
//   * a datagram from P on that relay socket  ->  ChannelData N + the datagram, sent from the server socket to C
//     (section 12.7).
// TurnServer installs each rule here (routeChannel / routePeer) with the time left until the channel or the
// permission expires, whichever is first, and removes it when either goes away; it leaves out allocations with a
// bandwidth cap or a port-restricted permission, which need their per-packet checks. A datagram that matches a live
// rule is forwarded without calling JavaScript; everything else (requests, unknown channels, expired rules) is
// handed to JavaScript exactly as before, which applies the full checks.

// One side of a 5-tuple, canonical: IPv4-mapped IPv6 addresses are stored as IPv4 (RFC 4291 section 2.5.5.2).
struct RouteKey {
  uint8_t addr[16];
  uint16_t port;
  uint16_t channel;  // 0 for peer rules
  uint8_t family;    // 4 or 6

  bool operator==(const RouteKey& o) const {
    return family == o.family && port == o.port && channel == o.channel &&
           memcmp(addr, o.addr, family == 4 ? 4 : 16) == 0;
  }
};

struct RouteKeyHash {
  size_t operator()(const RouteKey& k) const {
    // FNV-1a over the significant bytes.
    uint64_t h = 1469598103934665603ull;
    int n = k.family == 4 ? 4 : 16;
    for (int i = 0; i < n; i++) h = (h ^ k.addr[i]) * 1099511628211ull;
    h = (h ^ k.port) * 1099511628211ull;
    h = (h ^ k.channel) * 1099511628211ull;
    return static_cast<size_t>(h ^ (h >> 29));
  }
};

bool KeyFromSockaddr(const sockaddr_storage& ss, uint16_t channel, RouteKey* k) {
  memset(k, 0, sizeof(*k));
  k->channel = channel;
  if (ss.ss_family == AF_INET) {
    auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    k->family = 4;
    memcpy(k->addr, &v4->sin_addr, 4);
    k->port = ntohs(v4->sin_port);
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    k->port = ntohs(v6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&v6->sin6_addr)) {
      k->family = 4;
      memcpy(k->addr, &v6->sin6_addr.s6_addr[12], 4);
    } else {
      k->family = 6;
      memcpy(k->addr, &v6->sin6_addr, 16);
    }
    return true;
  }
  return false;
}

// A numeric address for a socket of `family` (AF_INET or AF_INET6). A dual-stack IPv6 socket reaches IPv4 peers
// through IPv4-mapped addresses (RFC 4291 section 2.5.5.2). Returns 0 when `host` is not a numeric address of a
// family the socket can reach.
socklen_t SockaddrFor(int family, const char* hostIn, int port, sockaddr_storage* out) {
  memset(out, 0, sizeof(*out));
  if (port <= 0 || port > 65535) return 0;
  char host[INET6_ADDRSTRLEN + 32];
  snprintf(host, sizeof(host), "%s", hostIn);
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(static_cast<uint16_t>(port));
    if (family != AF_INET6) return sizeof(sockaddr_in);
    in_addr a = v4->sin_addr;
    memset(out, 0, sizeof(*out));
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(static_cast<uint16_t>(port));
    v6->sin6_addr.s6_addr[10] = 0xff;
    v6->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&v6->sin6_addr.s6_addr[12], &a, 4);
    return sizeof(sockaddr_in6);
  }
  if (family != AF_INET6) return 0;
  char* pct = strchr(host, '%');
  uint32_t scope = 0;
  if (pct != nullptr) {
    *pct = '\0';
    scope = if_nametoindex(pct + 1);
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) != 1) return 0;
  v6->sin6_family = AF_INET6;
  v6->sin6_port = htons(static_cast<uint16_t>(port));
  v6->sin6_scope_id = scope;
  return sizeof(sockaddr_in6);
}

uint64_t NowMs() { return uv_hrtime() / 1000000u; }

class BatchUdp;
// Live BatchUdp objects of this thread, to check an object handed in as a rule's target.
thread_local std::unordered_set<BatchUdp*> tLive;

// Where a routed datagram goes: the socket that sends it, the destination, and (peer rules) the channel header.
struct Route {
  BatchUdp* target = nullptr;
  Napi::ObjectReference targetRef;  // keeps `target` alive while the rule exists
  sockaddr_storage dst;
  socklen_t dstLen = 0;
  uint16_t channel = 0;  // peer rules: the ChannelData channel number towards the client
  uint64_t deadlineMs = 0;
};

class BatchUdp : public Napi::ObjectWrap<BatchUdp> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "BatchUdp",
                       {InstanceMethod("start", &BatchUdp::Start), InstanceMethod("stop", &BatchUdp::Stop),
                        InstanceMethod("close", &BatchUdp::Close), InstanceMethod("queue", &BatchUdp::Queue),
                        InstanceMethod("flush", &BatchUdp::Flush), InstanceMethod("stats", &BatchUdp::Stats),
                        InstanceMethod("ref", &BatchUdp::Ref), InstanceMethod("unref", &BatchUdp::Unref),
                        InstanceMethod("routeChannel", &BatchUdp::RouteChannel),
                        InstanceMethod("unrouteChannel", &BatchUdp::UnrouteChannel),
                        InstanceMethod("routePeer", &BatchUdp::RoutePeer),
                        InstanceMethod("unroutePeer", &BatchUdp::UnroutePeer),
                        InstanceMethod("takeRouted", &BatchUdp::TakeRouted)});
  }

  explicit BatchUdp(const Napi::CallbackInfo& info) : Napi::ObjectWrap<BatchUdp>(info) {
    Napi::Env env = info.Env();
    fd_ = ArgInt(info, 0, "fd");
    if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
      throw Napi::TypeError::New(env, "meta must be a Uint32Array");
    if (info.Length() < 3 || !info[2].IsFunction()) throw Napi::TypeError::New(env, "onBatch must be a function");
    int batch = ArgInt(info, 3, "batchSize");
    if (batch < 1 || batch > 1024) throw Napi::RangeError::New(env, "batchSize must be 1..1024");
    Napi::Uint32Array meta = info[1].As<Napi::Uint32Array>();
    if (meta.ElementLength() < static_cast<size_t>(batch * kMetaStride)) throw Napi::RangeError::New(env, "meta is too short for batchSize");
    slabBytes_ = info.Length() > 4 && info[4].IsNumber() ? static_cast<size_t>(ArgInt(info, 4, "slabBytes")) : kSlabBytes;
    arenaBytes_ = info.Length() > 5 && info[5].IsNumber() ? static_cast<size_t>(ArgInt(info, 5, "arenaBytes")) : kSendArenaBytes;
    if (slabBytes_ < 2048 || slabBytes_ > (64u << 20)) throw Napi::RangeError::New(env, "slabBytes must be 2 KiB..64 MiB");
    if (arenaBytes_ < kMaxDatagram || arenaBytes_ > (64u << 20)) throw Napi::RangeError::New(env, "arenaBytes must be 64 KiB..64 MiB");
    batch_ = batch;
    meta_ = meta.Data();
    metaRef_ = Napi::Persistent(meta);
    callback_ = Napi::Persistent(info[2].As<Napi::Function>());
    context_ = new Napi::AsyncContext(env, "natpunch:BatchUdp");
    sendArena_ = static_cast<uint8_t*>(malloc(arenaBytes_));
    if (sendArena_ == nullptr || tScratch.Get(batch) == nullptr) throw Napi::Error::New(env, "out of memory");
    rmsgs_.resize(batch);
    riov_.resize(batch);
    raddr_.resize(batch);
    smsgs_.resize(batch);
    siov_.resize(batch);
    saddr_.resize(batch);
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok) throw Napi::Error::New(env, "no event loop");
    handle_ = new uv_poll_t;
    int rc = uv_poll_init_socket(loop, handle_, fd_);
    if (rc != 0) {
      delete handle_;
      handle_ = nullptr;
      ThrowErrno(env, -rc, "uv_poll_init");
    }
    handle_->data = this;
    // The deferred flush (ScheduleFlush): a check handle flushes after the poll phase, so what several sockets' read
    // rounds queue here in one loop turn leaves in one sendmmsg; the idle handle only keeps the next poll from
    // blocking when the flush was scheduled too late in a turn for this turn's check phase.
    check_ = new uv_check_t;
    idle_ = new uv_idle_t;
    uv_check_init(loop, check_);
    uv_idle_init(loop, idle_);
    check_->data = this;
    idle_->data = this;
    // Both stay referenced: they are active only while a flush is pending, and that flush must run even when the
    // socket itself is unref()ed and nothing else keeps the loop alive (as a setImmediate would).
    env_ = env;
    tLive.insert(this);
  }

  ~BatchUdp() override {
    tLive.erase(this);
    CloseHandle();
    free(sendArena_);
    delete context_;
  }

  // Queues one datagram (a followed by b) to dst; false when this socket is closed. Flushes a full queue first and
  // schedules a flush for the end of the loop turn.
  bool Enqueue(const sockaddr_storage& dst, socklen_t dstLen, const uint8_t* a, size_t alen, const uint8_t* b,
               size_t blen) {
    if (fd_ < 0) return false;
    size_t len = alen + blen;
    if (len > kMaxDatagram) return false;
    if (queued_ == batch_ || arenaUsed_ + len > arenaBytes_) FlushQueue();
    memcpy(&saddr_[queued_], &dst, dstLen);
    uint8_t* at = sendArena_ + arenaUsed_;
    memcpy(at, a, alen);
    if (blen) memcpy(at + alen, b, blen);
    siov_[queued_].iov_base = at;
    siov_[queued_].iov_len = len;
    arenaUsed_ += len;
    mmsghdr& m = smsgs_[queued_];
    memset(&m, 0, sizeof(m));
    m.msg_hdr.msg_name = &saddr_[queued_];
    m.msg_hdr.msg_namelen = dstLen;
    m.msg_hdr.msg_iov = &siov_[queued_];
    m.msg_hdr.msg_iovlen = 1;
    queued_++;
    ScheduleFlush();
    return true;
  }

 private:
  static void OnPoll(uv_poll_t* h, int status, int events) {
    auto* self = static_cast<BatchUdp*>(h->data);
    if (self == nullptr || status < 0) return;
    Napi::Env env = self->env_;
    Napi::HandleScope scope(env);
    self->ReadRounds(env);
  }

  void ReadRounds(Napi::Env env) {
    for (int round = 0; round < kReadRounds && handle_ != nullptr; round++) {
      // Fetched per round: JavaScript called in the previous round may have created a BatchUdp with a larger batch.
      uint8_t* scratch = tScratch.Get(batch_);
      if (scratch == nullptr) return;
      if (scratch != readScratch_) {
        // Headers point into the scratch: set once, and again only when it moved.
        readScratch_ = scratch;
        for (int i = 0; i < batch_; i++) {
          riov_[i].iov_base = scratch + static_cast<size_t>(i) * kMaxDatagram;
          riov_[i].iov_len = kMaxDatagram;
          memset(&rmsgs_[i], 0, sizeof(rmsgs_[i]));
          rmsgs_[i].msg_hdr.msg_iov = &riov_[i];
          rmsgs_[i].msg_hdr.msg_iovlen = 1;
          rmsgs_[i].msg_hdr.msg_name = &raddr_[i];
          rmsgs_[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
        }
      }
      int n;
      do {
        n = recvmmsg(fd_, rmsgs_.data(), static_cast<unsigned>(batch_), MSG_DONTWAIT, nullptr);
      } while (n < 0 && errno == EINTR);
      if (n <= 0) {
        // EAGAIN: drained. Other errors (a queued ICMP error, ENOMEM) concern one datagram or none: count and go on.
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) recvErrors_++;
        return;
      }
      // The relay fast path first (see Route): routed datagrams never reach the slab or JavaScript.
      const bool peerSide = !peerRoutes_.empty();
      const bool clientSide = !peerSide && !channelRoutes_.empty();
      const uint64_t now = peerSide || clientSide ? NowMs() : 0;
      bool inOrder = true;
      size_t total = 0;
      for (int i = 0; i < n; i++) {
        size_t len = rmsgs_[i].msg_len;
        const uint8_t* d = static_cast<const uint8_t*>(riov_[i].iov_base);
        bool routed = false;
        if (peerSide) {
          routed = RoutePeerDatagram(raddr_[i], d, len, now);
        } else if (clientSide && inOrder) {
          bool channelData = len >= 4 && d[0] >= 0x40 && d[0] <= 0x7f;
          if (channelData) routed = RouteChannelDatagram(raddr_[i], d, len, now);
          // A TURN request or indication (STUN's first bytes 0..3, RFC 7983; anything but a Binding request, type
          // 0x0001) goes to JavaScript and may change the rules (a Refresh deleting the allocation, a ChannelBind):
          // the rest of this batch follows it there, in order. Binding requests and other protocols' datagrams
          // (the rendezvous' 0xF0) change no TURN state.
          else if (len < 2 || (d[0] <= 3 && !(d[0] == 0 && d[1] == 1))) inOrder = false;
        }
        if (routed) {
          rmsgs_[i].msg_len = kRouted;
        } else {
          total += len;
        }
      }
      if (total > 0 && (slab_.IsEmpty() || slabUsed_ + total > slabSize_)) {
        slabSize_ = total > slabBytes_ ? total : slabBytes_;
        Napi::Buffer<uint8_t> fresh = Napi::Buffer<uint8_t>::New(env, slabSize_);
        slabData_ = fresh.Data();
        slab_ = Napi::Persistent(fresh);
        slabUsed_ = 0;
      }
      int kept = 0;
      for (int i = 0; i < n; i++) {
        if (rmsgs_[i].msg_len == kRouted) continue;
        const sockaddr_storage& ss = raddr_[i];
        uint32_t* m = meta_ + kept * kMetaStride;
        if (ss.ss_family == AF_INET) {
          auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
          m[2] = ntohs(v4->sin_port);
          m[3] = 4;
          m[4] = ntohl(v4->sin_addr.s_addr);
        } else if (ss.ss_family == AF_INET6) {
          auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
          m[2] = ntohs(v6->sin6_port);
          m[3] = 6;
          const uint8_t* b = v6->sin6_addr.s6_addr;
          for (int w = 0; w < 4; w++) m[4 + w] = (uint32_t(b[w * 4]) << 24) | (uint32_t(b[w * 4 + 1]) << 16) | (uint32_t(b[w * 4 + 2]) << 8) | b[w * 4 + 3];
        } else {
          continue;
        }
        size_t len = rmsgs_[i].msg_len;
        memcpy(slabData_ + slabUsed_, riov_[i].iov_base, len);
        m[0] = static_cast<uint32_t>(slabUsed_);
        m[1] = static_cast<uint32_t>(len);
        slabUsed_ += len;
        kept++;
      }
      // recvmmsg shortened the address lengths of the datagrams it returned: restore them for the next round.
      for (int i = 0; i < n; i++) rmsgs_[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
      received_ += static_cast<uint64_t>(n);
      batches_++;
      if (kept > 0) {
        Napi::Value slab = slab_.Value();
        try {
          callback_.MakeCallback(env.Global(), {slab, Napi::Number::New(env, kept)}, *context_);
        } catch (const Napi::Error& e) {
          napi_fatal_exception(env, e.Value());
        }
      }
      FlushQueue();
      if (n < batch_) return;
    }
  }

  // ChannelData (RFC 8656 section 12.4) from a client with a live rule: its data goes to the peer from the relay
  // socket. A Length beyond the datagram (section 12.5) is left to JavaScript, which drops it and counts.
  bool RouteChannelDatagram(const sockaddr_storage& from, const uint8_t* d, size_t len, uint64_t now) {
    size_t dataLen = (static_cast<size_t>(d[2]) << 8) | d[3];
    if (dataLen > len - 4) return false;
    RouteKey key;
    if (!KeyFromSockaddr(from, static_cast<uint16_t>((d[0] << 8) | d[1]), &key)) return false;
    auto it = channelRoutes_.find(key);
    if (it == channelRoutes_.end() || now > it->second.deadlineMs) return false;
    Route& r = it->second;
    if (!r.target->Enqueue(r.dst, r.dstLen, d + 4, dataLen, nullptr, 0)) return false;
    routedPackets_++;
    routedTotal_++;
    routedBytes_ += dataLen;
    return true;
  }

  // A datagram from a peer with a live rule: ChannelData to the client from the server socket (section 12.7; over
  // UDP without padding, section 12.5).
  bool RoutePeerDatagram(const sockaddr_storage& from, const uint8_t* d, size_t len, uint64_t now) {
    if (len > 0xffff) return false;
    RouteKey key;
    if (!KeyFromSockaddr(from, 0, &key)) return false;
    auto it = peerRoutes_.find(key);
    if (it == peerRoutes_.end() || now > it->second.deadlineMs) return false;
    Route& r = it->second;
    uint8_t head[4] = {static_cast<uint8_t>(r.channel >> 8), static_cast<uint8_t>(r.channel),
                       static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)};
    if (!r.target->Enqueue(r.dst, r.dstLen, head, 4, d, len)) return false;
    routedPackets_++;
    routedTotal_++;
    routedBytes_ += len;
    return true;
  }

  void ScheduleFlush() {
    if (flushScheduled_ || check_ == nullptr) return;
    flushScheduled_ = true;
    uv_check_start(check_, OnCheck);
    uv_idle_start(idle_, [](uv_idle_t*) {});
  }

  static void OnCheck(uv_check_t* h) {
    auto* self = static_cast<BatchUdp*>(h->data);
    if (self == nullptr) return;
    self->flushScheduled_ = false;
    uv_check_stop(self->check_);
    uv_idle_stop(self->idle_);
    self->FlushQueue();
  }

  int FlushQueue() {
    int dropped = 0;
    int start = 0;
    while (start < queued_ && fd_ >= 0) {
      int n;
      do {
        n = sendmmsg(fd_, smsgs_.data() + start, static_cast<unsigned>(queued_ - start), MSG_DONTWAIT);
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        // The datagram at `start` failed (full send buffer, EMSGSIZE, no route): drop it, send the rest.
        dropped++;
        start++;
        continue;
      }
      sent_ += static_cast<uint64_t>(n);
      sendCalls_++;
      start += n;
    }
    dropped_ += static_cast<uint64_t>(dropped);
    queued_ = 0;
    arenaUsed_ = 0;
    return dropped;
  }

  // queue(data: Uint8Array, address: string, port: number, tail?: Uint8Array) -> false when the address is not a
  // numeric IP. With `tail`, the datagram is data followed by tail (a header and a payload without joining them in JS,
  // e.g. TURN ChannelData, RFC 8656 section 12.4).
  Napi::Value Queue(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 3 || !info[0].IsTypedArray() || !info[1].IsString() || !info[2].IsNumber())
      throw Napi::TypeError::New(env, "queue(data, address, port)");
    Napi::Uint8Array data = info[0].As<Napi::Uint8Array>();
    Napi::Uint8Array tail;
    bool hasTail = info.Length() > 3 && info[3].IsTypedArray();
    if (hasTail) tail = info[3].As<Napi::Uint8Array>();
    size_t headLen = data.ByteLength();
    size_t len = headLen + (hasTail ? tail.ByteLength() : 0);
    if (len > kMaxDatagram) return Napi::Boolean::New(env, false);
    char host[INET6_ADDRSTRLEN + 32];
    size_t hostLen = 0;
    if (napi_get_value_string_latin1(env, info[1], host, sizeof(host), &hostLen) != napi_ok) return Napi::Boolean::New(env, false);
    int port = info[2].As<Napi::Number>().Int32Value();
    if (port <= 0 || port > 65535) return Napi::Boolean::New(env, false);
    sockaddr_storage ss;
    socklen_t slen = SockaddrFor(family_, host, port, &ss);
    if (slen == 0) return Napi::Boolean::New(env, false);
    const uint8_t* t = hasTail ? tail.Data() : nullptr;
    return Napi::Boolean::New(env, Enqueue(ss, slen, data.Data(), headLen, t, len - headLen));
  }

  // --- Relay fast path rules (see Route). Addresses are numeric strings as JavaScript has them.

  static BatchUdp* Other(const Napi::CallbackInfo& info, size_t i) {
    if (info.Length() <= i || !info[i].IsObject()) throw Napi::TypeError::New(info.Env(), "expected a BatchUdp");
    Napi::Object o = info[i].As<Napi::Object>();
    void* raw = nullptr;
    if (napi_unwrap(info.Env(), o, &raw) != napi_ok || tLive.count(static_cast<BatchUdp*>(raw)) == 0)
      throw Napi::TypeError::New(info.Env(), "expected a BatchUdp");
    return static_cast<BatchUdp*>(raw);
  }

  static bool KeyFromText(const Napi::CallbackInfo& info, size_t i, uint16_t channel, RouteKey* key) {
    std::string host = ArgString(info, i, "address");
    sockaddr_storage ss;
    if (SockaddrFor(AF_INET6, host.c_str(), ArgInt(info, i + 1, "port"), &ss) == 0) return false;
    return KeyFromSockaddr(ss, channel, key);
  }

  // Fills a rule's target and destination; false when the address is not numeric or the target is closed.
  static bool FillRoute(const Napi::CallbackInfo& info, size_t targetArg, size_t dstArg, Route* r) {
    BatchUdp* target = Other(info, targetArg);
    if (target->fd_ < 0) return false;
    std::string host = ArgString(info, dstArg, "address");
    r->dstLen = SockaddrFor(target->family_, host.c_str(), ArgInt(info, dstArg + 1, "port"), &r->dst);
    if (r->dstLen == 0) return false;
    r->target = target;
    r->targetRef = Napi::Persistent(info[targetArg].As<Napi::Object>());
    return true;
  }

  static uint64_t DeadlineArg(const Napi::CallbackInfo& info, size_t i) {
    if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "ttlMs must be a number");
    double ttl = info[i].As<Napi::Number>().DoubleValue();
    return NowMs() + static_cast<uint64_t>(ttl > 0 ? ttl : 0);
  }

  // routeChannel(clientAddress, clientPort, channel, relay: BatchUdp, peerAddress, peerPort, ttlMs) -> boolean.
  // On the client-facing socket: ChannelData `channel` from the client goes to the peer through `relay`.
  Napi::Value RouteChannel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int channel = ArgInt(info, 2, "channel");
    RouteKey key;
    if (channel < 0x4000 || channel > 0x7fff || !KeyFromText(info, 0, static_cast<uint16_t>(channel), &key))
      return Napi::Boolean::New(env, false);
    Route r;
    if (fd_ < 0 || !FillRoute(info, 3, 4, &r)) return Napi::Boolean::New(env, false);
    r.deadlineMs = DeadlineArg(info, 6);
    channelRoutes_[key] = std::move(r);
    return Napi::Boolean::New(env, true);
  }

  // unrouteChannel(clientAddress, clientPort, channel)
  Napi::Value UnrouteChannel(const Napi::CallbackInfo& info) {
    RouteKey key;
    int channel = ArgInt(info, 2, "channel");
    if (KeyFromText(info, 0, static_cast<uint16_t>(channel), &key)) channelRoutes_.erase(key);
    return info.Env().Undefined();
  }

  // routePeer(peerAddress, peerPort, server: BatchUdp, clientAddress, clientPort, channel, ttlMs) -> boolean.
  // On a relay socket: datagrams from the peer go to the client through `server` as ChannelData `channel`.
  Napi::Value RoutePeer(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int channel = ArgInt(info, 5, "channel");
    RouteKey key;
    if (channel < 0x4000 || channel > 0x7fff || !KeyFromText(info, 0, 0, &key)) return Napi::Boolean::New(env, false);
    Route r;
    if (fd_ < 0 || !FillRoute(info, 2, 3, &r)) return Napi::Boolean::New(env, false);
    r.channel = static_cast<uint16_t>(channel);
    r.deadlineMs = DeadlineArg(info, 6);
    peerRoutes_[key] = std::move(r);
    return Napi::Boolean::New(env, true);
  }

  // unroutePeer(peerAddress, peerPort)
  Napi::Value UnroutePeer(const Napi::CallbackInfo& info) {
    RouteKey key;
    if (KeyFromText(info, 0, 0, &key)) peerRoutes_.erase(key);
    return info.Env().Undefined();
  }

  // takeRouted() -> [datagrams, bytes] forwarded by the fast path since the last call (bytes: the relayed data).
  Napi::Value TakeRouted(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array a = Napi::Array::New(env, 2);
    a.Set(0u, static_cast<double>(routedPackets_));
    a.Set(1u, static_cast<double>(routedBytes_));
    routedPackets_ = 0;
    routedBytes_ = 0;
    return a;
  }

  // flush() -> datagrams dropped by this flush.
  Napi::Value Flush(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), FlushQueue()); }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("received", static_cast<double>(received_));
    o.Set("batches", static_cast<double>(batches_));
    o.Set("sent", static_cast<double>(sent_));
    o.Set("sendCalls", static_cast<double>(sendCalls_));
    o.Set("sendDropped", static_cast<double>(dropped_));
    o.Set("recvErrors", static_cast<double>(recvErrors_));
    o.Set("routed", static_cast<double>(routedTotal_));
    return o;
  }

  void CloseHandle() {
    if (check_ != nullptr) {
      uv_check_stop(check_);
      uv_idle_stop(idle_);
      check_->data = nullptr;
      idle_->data = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(check_), [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
      uv_close(reinterpret_cast<uv_handle_t*>(idle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
      check_ = nullptr;
      idle_ = nullptr;
      flushScheduled_ = false;
    }
    if (handle_ == nullptr) return;
    uv_poll_stop(handle_);
    handle_->data = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    handle_ = nullptr;
  }

  Napi::Value Start(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (handle_ == nullptr) throw Napi::Error::New(env, "BatchUdp is closed");
    family_ = SocketFamily(env, fd_);
    int rc = uv_poll_start(handle_, UV_READABLE, OnPoll);
    if (rc != 0) ThrowErrno(env, -rc, "uv_poll_start");
    return env.Undefined();
  }

  Napi::Value Stop(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_poll_stop(handle_);
    return info.Env().Undefined();
  }

  // close(): flushes what is queued, stops watching and closes the fd (the socket belongs to this object).
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (fd_ >= 0) {
      FlushQueue();
      CloseHandle();
      close(fd_);
      fd_ = -1;
      // Rules hold references to other sockets; a closed socket forwards nothing.
      channelRoutes_.clear();
      peerRoutes_.clear();
    }
    return info.Env().Undefined();
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (handle_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(handle_));
    return info.Env().Undefined();
  }

  int fd_ = -1;
  int family_ = AF_INET;
  int batch_ = 0;
  uint32_t* meta_ = nullptr;
  Napi::Reference<Napi::Uint32Array> metaRef_;
  Napi::FunctionReference callback_;
  Napi::AsyncContext* context_ = nullptr;
  uv_poll_t* handle_ = nullptr;
  napi_env env_ = nullptr;
  size_t slabBytes_ = kSlabBytes;
  size_t arenaBytes_ = kSendArenaBytes;
  std::vector<mmsghdr> rmsgs_;
  std::vector<iovec> riov_;
  std::vector<sockaddr_storage> raddr_;
  Napi::Reference<Napi::Buffer<uint8_t>> slab_;
  uint8_t* slabData_ = nullptr;
  size_t slabSize_ = 0;
  size_t slabUsed_ = 0;
  uint8_t* sendArena_ = nullptr;
  size_t arenaUsed_ = 0;
  int queued_ = 0;
  std::vector<mmsghdr> smsgs_;
  std::vector<iovec> siov_;
  std::vector<sockaddr_storage> saddr_;
  uint64_t received_ = 0, batches_ = 0, sent_ = 0, sendCalls_ = 0, dropped_ = 0, recvErrors_ = 0;
  uv_check_t* check_ = nullptr;
  uv_idle_t* idle_ = nullptr;
  bool flushScheduled_ = false;
  std::unordered_map<RouteKey, Route, RouteKeyHash> channelRoutes_;
  std::unordered_map<RouteKey, Route, RouteKeyHash> peerRoutes_;
  uint64_t routedPackets_ = 0, routedBytes_ = 0, routedTotal_ = 0;
  uint8_t* readScratch_ = nullptr;  // the scratch the receive headers point into
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("tcpSocket", Napi::Function::New(env, TcpSocket));
  exports.Set("rawSocket", Napi::Function::New(env, RawSocket));
  exports.Set("packetSocket", Napi::Function::New(env, PacketSocket));
  exports.Set("recvPacket", Napi::Function::New(env, RecvPacket));
  exports.Set("bind", Napi::Function::New(env, Bind));
  exports.Set("listen", Napi::Function::New(env, Listen));
  exports.Set("connect", Napi::Function::New(env, Connect));
  exports.Set("socketError", Napi::Function::New(env, SocketError));
  exports.Set("getSockName", Napi::Function::New(env, GetSockName));
  exports.Set("getPeerName", Napi::Function::New(env, GetPeerName));
  exports.Set("setTtl", Napi::Function::New(env, SetTtl));
  exports.Set("getTtl", Napi::Function::New(env, GetTtl));
  exports.Set("sendTo", Napi::Function::New(env, SendTo));
  exports.Set("recvFrom", Napi::Function::New(env, RecvFrom));
  exports.Set("close", Napi::Function::New(env, Close));
  exports.Set("FdWatcher", FdWatcher::Init(env));
  exports.Set("udpSocket", Napi::Function::New(env, UdpSocket));
  exports.Set("setSocketBuffers", Napi::Function::New(env, SetSocketBuffers));
  exports.Set("steerToFirst", Napi::Function::New(env, SteerToFirst));
  exports.Set("steerBindingsOnly", Napi::Function::New(env, SteerBindingsOnly));
  exports.Set("BatchUdp", BatchUdp::Init(env));
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(natpunch, Init)
