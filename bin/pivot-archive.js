#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --optimize-for-size
// A signal while the CLI loads is kept for the command (a run then stops at once, recorded, exit 4).
await import('../dist/src/early-signals.js').then((m) => m.keepEarlySignals(), () => undefined);
const { main } = await import('../dist/src/cli.js').catch((err) => {
  // Only a module that is not there means "not built"; anything else (EMFILE under a low
  // `ulimit -n`, EACCES, a syntax error) is said as it is.
  const missing = err?.code === 'ERR_MODULE_NOT_FOUND';
  process.stderr.write(missing ? `pivot-archive: not built (${err.message}); run "npm install" or "npm run build" first\n` : `pivot-archive: cannot start: ${err?.message ?? err}\n`);
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
