/**
 * A plugin (its module's text, for a `.mjs` file) that SIGTERMs its own run at the STOP_AT-th item
 * it transforms, and does nothing without STOP_AT: a run stopped part-way, where the test chooses.
 */
export const STOPPER_PLUGIN = "let n = 0;\nexport default { name: 'stopper', version: '1.0.0', hostApi: '^1.0.0', transform(item) { if (process.env.STOP_AT && ++n === Number(process.env.STOP_AT)) process.kill(process.pid, 'SIGTERM'); return item; } };\n";
