// Minimal typings for packages that ship none; only what this project calls.
declare module 'unzipper' {
  /** Where unzipper looks for the end-of-central-directory record: the last `tailSize` bytes (default 80). */
  interface OpenOptions {
    tailSize?: number;
  }
  export interface CustomSource {
    size(): Promise<number>;
    stream(offset: number, length?: number): import('node:stream').Readable;
  }
  const unzipper: { Open: { buffer(data: Buffer, options?: OpenOptions): Promise<unknown>; custom(source: CustomSource, options?: OpenOptions): Promise<unknown> } };
  export default unzipper;
}
declare module 'unzipper/lib/Open/unzip.js' {
  /**
   * unzipper's reader of one entry (what its directory's `file.stream()` calls): the local header
   * at `offset` of `source`, read within `length` bytes, then the data as the central directory's
   * `vars` describe it.
   */
  const unzip: (
    source: import('unzipper').CustomSource,
    offset: number,
    password: undefined,
    vars: { flags: number; compressionMethod: number; compressedSize: number; uncompressedSize: number },
    length: number,
  ) => import('node:stream').Readable;
  export default unzip;
}
