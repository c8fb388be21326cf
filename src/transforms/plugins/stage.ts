import type { Logger } from '../../logger.js';
import { rejectItem, type ExportContext } from '../../model.js';
import type { Recorder } from '../../pipeline/recorder.js';
import { rejected, type Stage, type Unit } from '../../pipeline/unit.js';
import type { PluginRegistry } from './index.js';

/**
 * The plugins stage: every registered plugin, in order; an item may become several, or a
 * rejection. An item a plugin returns under an id another item of the export has (an event's,
 * asked of the export when it can tell, or one plugins gave an earlier item) is refused: its event
 * (the exact bytes, as for any rejection) is kept under the refused id, and the run goes on.
 */
export function pluginStage(plugins: PluginRegistry, archive: ExportContext, recorder: Recorder, logger: Logger, idsGivenEarlier: readonly string[] = []): Stage<'item'> {
  const context = { exportId: archive.exportId, tenant: archive.tenant };
  // The ids plugins gave items of earlier events, other than those events' own (those before the checkpoint too): memory grows with those alone.
  const given = new Set<string>(idsGivenEarlier);
  const taken = (id: string) => given.has(id) || (archive.hasEventId?.(id) ?? false);
  return async ({ item, position }) => {
    const outcome = await plugins.apply(item, context, (plugin, message) => logger.info(`plugin ${plugin}: ${message}`), taken);
    if ('rejected' in outcome) return rejected(rejectItem(item, outcome.rejected.reason, outcome.rejected.detail));
    const refused = outcome.refused ?? [];
    const idsGiven = outcome.items.filter((x) => x.id !== item.id).map((x) => x.id);
    for (const id of idsGiven) given.add(id);
    recorder.split(position, outcome.items.length + refused.length, idsGiven);
    return [...outcome.items.map((x): Unit => ({ kind: 'item', position, item: x })), ...refused.map((r) => rejected({ ...rejectItem(item, r.reason, r.detail), itemId: r.id }))];
  };
}
