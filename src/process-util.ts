import { readlinkSync } from 'node:fs';

/**
 * The PID namespace this process runs in, as Linux names it (`pid:[4026531836]`): two containers of
 * one kernel have pids of their own, so a pid means one process only within it. Undefined where
 * /proc cannot tell (not Linux).
 */
export const PID_NAMESPACE: string | undefined = (() => {
  try {
    return readlinkSync('/proc/self/ns/pid');
  } catch {
    return undefined;
  }
})();

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
