// Minimal typings for packages that ship none; only what this project calls.
declare module 'unzipper' {
  /** Where unzipper looks for the end-of-central-directory record: the last `tailSize` bytes (default 80). */
  interface OpenOptions {
    tailSize?: number;
  }
  interface CustomSource {
    size(): Promise<number>;
    stream(offset: number, length?: number): import('node:stream').Readable;
  }
  const unzipper: { Open: { buffer(data: Buffer, options?: OpenOptions): Promise<unknown>; custom(source: CustomSource, options?: OpenOptions): Promise<unknown> } };
  export default unzipper;
}
