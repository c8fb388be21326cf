// Minimal typings for packages that ship none; only what this project calls.
declare module 'unzipper' {
  /** Where unzipper looks for the end-of-central-directory record: the last `tailSize` bytes (default 80). */
  interface OpenOptions {
    tailSize?: number;
  }
  const unzipper: { Open: { buffer(data: Buffer, options?: OpenOptions): Promise<unknown> } };
  export default unzipper;
}
