import { readFileSync, readlinkSync } from 'node:fs';

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

/**
 * When the process `pid` (or this one) started, in clock ticks since boot (field 22 of
 * /proc/PID/stat): with the boot and the PID namespace, what tells one process from a later one
 * given the same pid. Undefined where /proc cannot tell (not Linux, no such process).
 */
export function processStartTicks(pid: number | 'self'): string | undefined {
  return processStatFields(pid)?.[19];
}

/**
 * Fields 3 on of /proc/PID/stat (state, ppid, ... utime at [11], stime [12], cutime [13], cstime
 * [14], starttime [19]); undefined where there is no such process (or no /proc).
 */
export function processStatFields(pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces and ')': fields 3 on follow the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}
