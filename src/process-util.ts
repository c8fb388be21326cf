/**
 * The process `pid` is known not to run in this PID namespace (ESRCH): meaningful for a pid of
 * another process only where it was taken in this boot and PID namespace (see the state dir's lock). One of another user (EPERM) runs;
 * any other answer is taken as running, so nothing of a live writer is ever treated as left over.
 */
export function processGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
