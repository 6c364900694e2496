// natpunch native addon: the few socket calls Node 20 does not expose.
//
//   * TCP sockets with SO_REUSEADDR + SO_REUSEPORT set before bind, so one local port can listen and make several
//     outgoing connections at once (P2P-NAT TCP hole punching, Ford/Srisuresh/Kegel 2005, RFC 5128 section 4).
//   * Non-blocking connect; completion is observed with an FdWatcher (a uv_poll_t on Node's own event loop), and
//     the connected fd is then handed to `new net.Socket({ fd })`.
//   * IP_TTL / IPV6_UNICAST_HOPS get and set on any socket fd (STUNT low-TTL SYNs, TTL discovery).
//   * Raw sockets (SOCK_RAW, needs CAP_NET_RAW): ICMP send/receive, with the source address.
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
#include <unistd.h>

#include <string>

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
  exports.Set("abiVersion", Napi::Number::New(env, 1));
  return exports;
}

}  // namespace

NODE_API_MODULE(natpunch, Init)
