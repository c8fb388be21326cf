import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * CPU seconds (user + system) a server run by a master process has used so far: the master's own,
 * its children's reaped (Linux adds them to the master's cutime and cstime when it waits for
 * them: Dovecot's per-login `imap` processes) and those still running (its login, auth, config,
 * stats and log processes). Read from /proc, in clock ticks of 1/100 s.
 */
export function serverCpuSeconds(runDir: string): number {
  const master = Number(readFileSync(join(runDir, 'master.pid'), 'utf8'));
  let ticks = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // Exited meanwhile: its time is in the master's cutime once reaped.
    }
    // pid (comm) state ppid ... utime stime cutime cstime: comm may hold spaces, so read after its ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
    const [ppid, utime, stime, cutime, cstime] = [fields[1]!, fields[11]!, fields[12]!, fields[13]!, fields[14]!];
    if (Number(entry) === master) ticks += utime + stime + cutime + cstime;
    else if (ppid === master) ticks += utime + stime;
  }
  return ticks / 100;
}
