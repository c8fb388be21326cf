import type { Logger } from '../../logger.js';
import { rejectItem, type ExportContext } from '../../model.js';
import type { Recorder } from '../../pipeline/recorder.js';
import { rejected, type Stage, type Unit } from '../../pipeline/unit.js';
import type { PluginRegistry } from './index.js';

/** The plugins stage: every registered plugin, in order; an item may become several, or a rejection. */
export function pluginStage(plugins: PluginRegistry, archive: ExportContext, recorder: Recorder, logger: Logger): Stage<'item'> {
  const context = { exportId: archive.exportId, tenant: archive.tenant };
  return async ({ item, position }) => {
    const outcome = await plugins.apply(item, context, (plugin, message) => logger.info(`plugin ${plugin}: ${message}`));
    if ('rejected' in outcome) return rejected(rejectItem(item, outcome.rejected.reason, outcome.rejected.detail));
    recorder.split(position, outcome.items.length);
    return outcome.items.map((x): Unit => ({ kind: 'item', position, item: x }));
  };
}
