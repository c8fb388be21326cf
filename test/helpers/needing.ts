import test, { type ExecutionContext } from 'ava';

/**
 * A test that needs something of the machine (a kernel feature, root to mount a tmpfs): `missing`
 * says why it cannot run here. In CI its absence fails; elsewhere it is a visible skip.
 */
export function needing(missing: string | undefined, title: string, body: (t: ExecutionContext) => Promise<void>): void {
  if (!missing) return void test(title, body);
  if (process.env.CI) return void test(title, (t) => t.fail(`not usable here: ${missing}`));
  console.warn(`\n*** skipped (${missing}): ${title} ***\n`);
  test.skip(`${title} (skipped: ${missing})`, body);
}
