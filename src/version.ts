import { createRequire } from 'node:module';

/** This tool's name and version (from package.json), for the records a run leaves. */
export const TOOL: { name: string; version: string } = (() => {
  // From dist/src/ as from src/: the package root is two folders up.
  const pkg = createRequire(import.meta.url)('../../package.json') as { name: string; version: string };
  return { name: pkg.name, version: pkg.version };
})();
