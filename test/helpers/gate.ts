/**
 * A plugin (its module's text, for a `.mjs` file) that holds its run at the AT-th item it
 * transforms until the file GATE exists: the items before it go on to the sink, so a test can act
 * on the store (delete a folder, stop a server) after a known part of the run, then let it go on.
 */
export function gatePlugin(at: number, gate: string): string {
  return `import { existsSync } from 'node:fs';\nlet n = 0;\nexport default { name: 'gate', version: '1.0.0', hostApi: '^1.0.0', async transform(item) { if (++n === ${at}) while (!existsSync(${JSON.stringify(gate)})) await new Promise((r) => setTimeout(r, 20)); return item; } };\n`;
}

/** Waits until `ready()` says so, polling every 50 ms; fails (throws) when `ended()` says the run ended first. */
export async function untilReady(ready: () => Promise<boolean>, ended: () => boolean, what: string): Promise<void> {
  for (;;) {
    if (await ready()) return;
    if (ended()) throw new Error(`the run ended before ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
