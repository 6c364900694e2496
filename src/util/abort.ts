import { NatpunchError } from './errors.js';

/** Throws NatpunchError('ABORTED') if the signal has fired. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new NatpunchError('ABORTED', 'operation aborted', { cause: signal.reason });
}

/** Resolves after `ms`, or rejects with ABORTED when the signal fires first. Never leaves a timer behind. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new NatpunchError('ABORTED', 'operation aborted', { cause: signal.reason }));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new NatpunchError('ABORTED', 'operation aborted', { cause: signal?.reason }));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Combines an optional caller signal with a timeout. Call `dispose()` when done so the timer does not linger.
 */
export function timeoutSignal(ms: number, parent?: AbortSignal): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new NatpunchError('TIMEOUT', `timed out after ${ms} ms`)), ms);
  const onParent = () => controller.abort(parent?.reason);
  if (parent?.aborted) controller.abort(parent.reason);
  else parent?.addEventListener('abort', onParent, { once: true });
  return {
    signal: controller.signal,
    dispose: () => {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onParent);
    },
  };
}
