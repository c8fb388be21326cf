// Minimal typings for packages that ship none; only what this project calls.
declare module 'unzipper' {
  const unzipper: { Open: { file(path: string): Promise<unknown>; buffer(data: Buffer): Promise<unknown> } };
  export default unzipper;
}
declare module 'stream-json' {
  import type { Transform } from 'node:stream';
  const streamJson: { parser(options?: Record<string, unknown>): Transform };
  export default streamJson;
}
declare module 'stream-json/streamers/StreamArray.js' {
  import type { Transform } from 'node:stream';
  const StreamArray: { streamArray(options?: Record<string, unknown>): Transform };
  export default StreamArray;
}
