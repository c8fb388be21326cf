import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { processStatFields } from '../src/process-util.js';

/** A process's ppid and CPU clock ticks, its own (utime + stime) and its reaped children's (cutime + cstime); undefined once it is gone. */
function times(pid: string | number): { ppid: number; own: number; reaped: number } | undefined {
  const fields = processStatFields(pid)?.map(Number);
  return fields && { ppid: fields[1]!, own: fields[11]! + fields[12]!, reaped: fields[13]! + fields[14]! };
}

/**
 * CPU seconds (user + system) a server run by a master process has used so far: the master's own,
 * its children's reaped (Linux adds them to the master's cutime and cstime when it waits for
 * them: Dovecot's per-login `imap` processes) and those still running (its login, auth, config,
 * stats and log processes). Read from /proc in clock ticks (USER_HZ, 100 a second on Linux). A
 * child reaped during the scan would be counted nowhere (or twice): the scan is made again until
 * the master's reaped time is the same before and after it.
 */
export function serverCpuSeconds(runDir: string): number {
  const master = Number(readFileSync(join(runDir, 'master.pid'), 'utf8'));
  for (let attempt = 0; ; attempt++) {
    const before = times(master);
    if (!before) throw new Error(`the server's master process ${master} is gone`);
    let children = 0;
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry) || Number(entry) === master) continue;
      const child = times(entry);
      if (child?.ppid === master) children += child.own;
    }
    const after = times(master);
    if (after && (after.reaped === before.reaped || attempt === 9)) return (after.own + after.reaped + children) / 100;
  }
}
