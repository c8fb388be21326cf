import { RejectReason } from '../../errors.js';
import { rejectItem, type AttachmentRef, type ExportContext } from '../../model.js';
import { rejected, type Stage } from '../../pipeline/unit.js';

/** Size of `n` bytes once base64 encoded in 76-character lines. */
export function base64Size(n: number): number {
  const chars = Math.ceil(n / 3) * 4;
  return chars + Math.max(0, Math.ceil(chars / 76) - 1) * 2;
}

/** A lower bound of the message size from the archive's directory alone: the attachments, encoded. */
export function attachmentsLowerBound(archive: Pick<ExportContext, 'attachment'>, refs: readonly AttachmentRef[]): number {
  let total = 0;
  for (const ref of refs) {
    const entry = archive.attachment(ref.id);
    if (entry) total += base64Size(entry.uncompressedSize);
  }
  return total;
}

const oversize = (maxItemSize: number, id: string, size: string) => `item ${id} is ${size} bytes as a message, over the ${maxItemSize}-byte limit`;

/**
 * Before building: an item whose attachments alone, encoded, exceed the limit is rejected
 * `oversize` without their bytes ever being read into memory.
 */
export function sizeBoundStage(archive: Pick<ExportContext, 'attachment'>, maxItemSize: number): Stage<'item'> {
  return async (unit) => {
    const bound = attachmentsLowerBound(archive, unit.item.attachments);
    return bound > maxItemSize ? rejected(rejectItem(unit.item, RejectReason.OVERSIZE, oversize(maxItemSize, unit.item.id, `over ${bound}`))) : unit;
  };
}

/** After building: a message over the limit is rejected `oversize` (and kept, as every rejection). */
export function sizeLimitStage(maxItemSize: number): Stage<'built'> {
  return async (unit) =>
    unit.message.length > maxItemSize ? rejected(rejectItem(unit.item, RejectReason.OVERSIZE, oversize(maxItemSize, unit.item.id, String(unit.message.length)))) : unit;
}
