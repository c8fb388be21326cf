// src/run.ts and src/state/inbox.ts still import RunConfig from here; the options live in src/options/.
export type { RunConfig } from './options/index.js';
