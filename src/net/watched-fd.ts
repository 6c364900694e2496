/**
 * A privileged socket fd (raw IP, packet capture) read on Node's event loop: the native addon's FdWatcher (a
 * uv_poll_t) calls back when the fd is readable, and each call drains it (drainReadable), so nothing blocks.
 * Subclasses say how to receive one packet and what to emit for it; the watcher, ref/unref and close live here once.
 */
import { EventEmitter } from 'node:events';
import { drainReadable, type NativeAddon, type NativeFdWatcher } from './native.js';

export abstract class WatchedFd<P> {
  readonly fd: number;
  protected readonly addon: NativeAddon;
  protected readonly watcher: NativeFdWatcher;
  protected readonly events = new EventEmitter();
  #closed = false;

  protected constructor(addon: NativeAddon, fd: number) {
    this.addon = addon;
    this.fd = fd;
    this.events.setMaxListeners(0);
    this.watcher = new addon.FdWatcher(fd, (status) => {
      if (this.#closed || status < 0) return;
      drainReadable(
        () => this.receive(),
        (packet) => this.deliver(packet),
        () => this.#closed,
      );
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Lets the process exit while this fd waits for packets. */
  unref(): this {
    this.watcher.unref();
    return this;
  }

  ref(): this {
    this.watcher.ref();
    return this;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.watcher.close();
    this.events.removeAllListeners();
    try {
      this.addon.close(this.fd);
    } catch {
      // already gone
    }
  }

  /** One packet from the fd, or null when it is empty (errors drop that packet: drainReadable). */
  protected abstract receive(): P | null;

  /** Hands one received packet to the listeners. */
  protected abstract deliver(packet: P): void;
}
