/**
 * natpunch/net: Sockets: the datagram transport, UDX (udx-native) endpoints, and the optional native addon's TCP, raw and packet sockets.
 */
export { NodeDatagramTransport } from './datagram.js';
export type { DatagramTransport, DatagramListener, RemoteInfo } from './datagram.js';
export { UdxEndpoint } from './udx.js';
export type { UdxStream } from './udx.js';
export { addonAvailable, addonStatus, loadAddon } from './native.js';
export type { AddonStatus, NativeAddon, NativeAddress } from './native.js';
export { bindReusePort, connectFrom, getTtl, listenReusePort, setTtl, socketFd, startConnect } from './tcp.js';
export type { ConnectFromOptions, TcpListenOptions, PendingConnect } from './tcp.js';
export { RawSocket, IPPROTO_ICMP, IPPROTO_RAW } from './raw.js';
export type { RawListener, RawRemoteInfo, RawSocketOptions } from './raw.js';
export { PacketCapture } from './capture.js';
export type { CaptureListener } from './capture.js';
