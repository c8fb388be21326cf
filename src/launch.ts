// How every pivot-archive process is started: V8's flags and glibc's malloc setting. The bin's
// shebang, package.json's start script and the examples repeat them (a shebang cannot import);
// test/launch.test.ts holds every copy equal to these. Why these: README, "Benchmarks".

/** V8's flags: a heap that grows little before it is collected (the memory bound). */
export const NODE_FLAGS: readonly string[] = ['--optimize-for-size'];

/**
 * glibc's malloc arenas, at most two (not 8 per core): native memory (message buffers, the
 * thread pool's file requests) freed in one thread's arena stayed there; 6-12 MB less peak RSS.
 */
export const LAUNCH_ENVIRONMENT: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/** `NAME=VALUE ...` of LAUNCH_ENVIRONMENT, as a shell command line or `env -S` puts it before the command. */
export function launchAssignments(): string[] {
  return Object.entries(LAUNCH_ENVIRONMENT).map(([name, value]) => `${name}=${value}`);
}
