#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --optimize-for-size
import { readFileSync } from 'node:fs';
// The soft open-file limit, read before anything loads: once a load has run out of descriptors
// there may be none left to read it with (as src/launch.ts reads it; undefined when not known).
const openFileLimit = (() => {
  try {
    return /^Max open files\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1];
  } catch {
    return undefined;
  }
})();
// A signal while the CLI loads is kept for the command (a run then stops at once, recorded, exit 4).
await import('../dist/src/early-signals.js').then((m) => m.keepEarlySignals(), () => undefined);
// Under a low open-file limit (`ulimit -n`), modules are read one at a time: Node's loader reads
// all of a module's imports at once, and under `ulimit -n 40` the CLI failed EMFILE before it
// could record anything (src/launch.ts). A run under the least it needs is then refused, recorded.
await import('../dist/src/launch.js').then((m) => m.loadModulesWithinOpenFileLimit(), () => undefined);
const { main } = await import('../dist/src/cli.js').catch((err) => {
  // Only a module that is not there means "not built"; anything else (EMFILE under a low
  // `ulimit -n`, EACCES, a syntax error) is said as it is.
  const missing = err?.code === 'ERR_MODULE_NOT_FOUND';
  // Under a low limit a package.json that could not be opened reads as a package not there.
  const low = Number(openFileLimit) < 256 ? `; or, under ulimit -n ${openFileLimit}, a package's package.json could not be opened for want of descriptors: then raise the open-file limit (ulimit -n 1024 in the shell or crontab line, LimitNOFILE=1024 in a systemd unit) and run again` : '';
  process.stderr.write(missing ? `pivot-archive: not built (${err.message}); run "npm install" or "npm run build" first${low}\n` : `pivot-archive: cannot start: ${err?.message ?? err}${shortage(err)}\n`);
  process.exit(2);
});
const code = await main();
// Exits once the command is done (a plugin's timer or socket left open must not keep a cron job
// alive), but only after stdout and stderr took everything: a pipe is written asynchronously, and
// an exit before that cuts the summary short. A reader that went away is not waited for.
await Promise.all([process.stdout, process.stderr].map((stream) => new Promise((resolve) => {
  stream.once('error', resolve);
  stream.write('', resolve);
})));
process.exit(code);

/**
 * What a load that ran out of descriptors says beyond Node's error: the open-file limit, how to
 * raise it, and why nothing is recorded: the modules that write the run log and the ledger are the
 * ones that could not be read, and Node keeps a module that failed to load as failed (importing it
 * again fails the same), so this process cannot write the record with them. Said with no module.
 */
function shortage(err) {
  const nothing = 'Nothing was delivered, and nothing was recorded: the modules that write the run log and the ledger are the ones that could not be read';
  if (err?.code === 'ENFILE') return `; the system's table of open files is full (ENFILE): run again once it has room. ${nothing}`;
  if (err?.code !== 'EMFILE') return '';
  return `; the open-file limit (ulimit -n) ${openFileLimit === undefined ? 'of this process is' : `is ${openFileLimit},`} too low for pivot-archive to load: raise it (ulimit -n 1024 in the shell or crontab line, LimitNOFILE=1024 in a systemd unit) and run again. ${nothing}`;
}
