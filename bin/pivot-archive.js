#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --optimize-for-size
const { main } = await import('../dist/src/cli.js').catch((err) => {
  process.stderr.write(`pivot-archive: not built (${err.message}); run "npm install" or "npm run build" first\n`);
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
