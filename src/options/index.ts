/** The options of `run` and `import`: one table, and what is derived from it. */
export { OPTIONS, optionsOf, type ImportConfig, type RunConfig } from './commands.js';
export { DEFAULT_MAX_ITEM_SIZE, checkFlags, defaultsOf, recordTargets, resolveConfig, yargsOptionsOf, yargsPositionalOf } from './resolve.js';
export { readConfigFile, validateConfigObject } from './file.js';
export { SIZE_UNITS_HELP, flagOrigin, givenTwice, nearest, parseBoolean, parseSize, parseWholeNumber, type Command } from './spec.js';
