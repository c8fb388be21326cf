#!/usr/bin/env -S node --optimize-for-size
// Many small Maildir files are written in parallel: give libuv more threads than its default 4,
// before anything starts the pool.
process.env.UV_THREADPOOL_SIZE ??= '32';
const { main } = await import('../dist/src/cli.js').catch((err) => {
  process.stderr.write(`pivot-archive: not built (${err.message}); run "npm install" or "npm run build" first\n`);
  process.exit(2);
});
process.exitCode = await main();
