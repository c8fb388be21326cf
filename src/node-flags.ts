// The V8 flags every pivot-archive process runs under. bin/pivot-archive.js's shebang, package.json's
// start script and the examples repeat them (a shebang cannot import); test/node-flags.test.ts
// holds every copy equal to this one.

/** How V8 sizes the heap: see README, "Memory". */
export const NODE_FLAGS: readonly string[] = ['--optimize-for-size'];
