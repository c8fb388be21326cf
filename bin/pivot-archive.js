#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --optimize-for-size
const { main } = await import('../dist/src/cli.js').catch((err) => {
  process.stderr.write(`pivot-archive: not built (${err.message}); run "npm install" or "npm run build" first\n`);
  process.exit(2);
});
// Exits once the command is done (its records written): a plugin's timer or socket left open must not keep a cron job alive.
process.exit(await main());
