import { NoteReason, RejectReason, errorMessage } from '../../errors.js';
import { readEntryBuffer } from '../../formats/zip/index.js';
import { rejectItem, type ExportContext } from '../../model.js';
import type { Recorder } from '../../pipeline/recorder.js';
import { rejected, type Stage } from '../../pipeline/unit.js';
import { buildMessage, messageIdFor, type LoadedAttachment } from './index.js';

/**
 * The build stage: reads the item's attachments from the export (none larger than the item
 * limit), builds its message. An attachment the archive lacks is noted and the item goes on
 * without it; one that cannot be read rejects the item.
 */
export function buildStage(archive: ExportContext, maxItemSize: number, recorder: Recorder): Stage<'item'> {
  const context = { tenant: archive.tenant, exportId: archive.exportId };
  return async ({ item, position }) => {
    const loaded: LoadedAttachment[] = [];
    for (const ref of item.attachments) {
      const entry = archive.attachment(ref.id);
      if (!entry) {
        loaded.push({ ref, missing: 'its bytes are not in the export archive' });
        await recorder.note(NoteReason.ATTACHMENT_MISSING, `attachment ${ref.id} of item ${item.id} is not in the archive; the item is delivered without it`, { itemId: item.id, conversationId: item.conversation.id });
        continue;
      }
      try {
        loaded.push({ ref, bytes: await readEntryBuffer(entry, maxItemSize) });
      } catch (err) {
        return rejected(rejectItem(item, RejectReason.ATTACHMENT_UNREADABLE, `attachment ${ref.id} of item ${item.id}: ${errorMessage(err)}`));
      }
    }
    return { kind: 'built', position, item, message: buildMessage(item, context, loaded), messageId: messageIdFor(archive.tenant, item.id) };
  };
}
