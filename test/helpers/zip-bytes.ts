// Zips built byte by byte (STORE only), so a test can make each record say what it likes.
import { crc32 } from 'node:zlib';

/** The local headers and data of STORE entries, from byte 0, and one central directory record for each. */
export interface StoredEntries {
  data: Buffer;
  records: Buffer[];
}

export function storedEntries(entries: Record<string, Buffer | string>): StoredEntries {
  const locals: Buffer[] = [];
  const records: Buffer[] = [];
  let offset = 0;
  for (const [name, content] of Object.entries(entries)) {
    const nameBytes = Buffer.from(name);
    const bytes = Buffer.from(content);
    const crc = crc32(bytes);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(bytes.length, 18);
    local.writeUInt32LE(bytes.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    const record = Buffer.alloc(46);
    record.writeUInt32LE(0x02014b50, 0);
    record.writeUInt16LE(20, 4); // version made by
    record.writeUInt16LE(20, 6); // version needed
    record.writeUInt32LE(crc, 16);
    record.writeUInt32LE(bytes.length, 20);
    record.writeUInt32LE(bytes.length, 24);
    record.writeUInt16LE(nameBytes.length, 28);
    record.writeUInt32LE(offset, 42);
    locals.push(local, nameBytes, bytes);
    records.push(Buffer.concat([record, nameBytes]));
    offset += local.length + nameBytes.length + bytes.length;
  }
  return { data: Buffer.concat(locals), records };
}

/** An end-of-central-directory record: `count` records (on this disk and in all) in `size` bytes at `offset`, then `comment`. */
export function endRecord(count: number, size: number, offset: number, comment: Buffer = Buffer.alloc(0)): Buffer {
  const record = Buffer.alloc(22);
  record.writeUInt32LE(0x06054b50, 0);
  record.writeUInt16LE(count, 8);
  record.writeUInt16LE(count, 10);
  record.writeUInt32LE(size, 12);
  record.writeUInt32LE(offset, 16);
  record.writeUInt16LE(comment.length, 20);
  return Buffer.concat([record, comment]);
}

/** An end record with every field saturated: the ZIP64 end record holds the numbers. */
export const SATURATED_END_RECORD = endRecord(0xffff, 0xffffffff, 0xffffffff);

/** A ZIP64 end-of-central-directory record (56 bytes) and its locator pointing at `at`, where the record is placed. */
export function zip64EndRecordAndLocator(count: number, size: number, offset: number, at: number): Buffer {
  const record = Buffer.alloc(56);
  record.writeUInt32LE(0x06064b50, 0);
  record.writeBigUInt64LE(44n, 4); // the size of the rest of the record
  record.writeUInt16LE(45, 12);
  record.writeUInt16LE(45, 14);
  record.writeBigUInt64LE(BigInt(count), 24);
  record.writeBigUInt64LE(BigInt(count), 32);
  record.writeBigUInt64LE(BigInt(size), 40);
  record.writeBigUInt64LE(BigInt(offset), 48);
  const locator = Buffer.alloc(20);
  locator.writeUInt32LE(0x07064b50, 0);
  locator.writeBigUInt64LE(BigInt(at), 8);
  locator.writeUInt32LE(1, 16); // disks in all
  return Buffer.concat([record, locator]);
}

/** A whole, well-formed zip of `entries`: data, directory, end record (with `comment`). */
export function storedZip(entries: Record<string, Buffer | string>, comment?: Buffer): Buffer {
  const { data, records } = storedEntries(entries);
  const directory = Buffer.concat(records);
  return Buffer.concat([data, directory, endRecord(records.length, directory.length, data.length, comment)]);
}
