/**
 * Waits `ms`, or less when `stop` aborts; resolves `true` when `stop` cut the wait short (or had
 * aborted before it: a run told to stop does not sit out a retry's wait), `false` when it ran its time.
 */
export function stoppableSleep(ms: number, stop?: AbortSignal): Promise<boolean> {
  if (stop?.aborted) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      stop?.removeEventListener('abort', stopped);
      resolve(false);
    }, ms);
    function stopped() {
      clearTimeout(timer);
      resolve(true);
    }
    stop?.addEventListener('abort', stopped, { once: true });
  });
}
