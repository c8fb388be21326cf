/**
 * The public API of pivot-archive, for plugin authors and embedders.
 * Plugins: `import { definePlugin, drop } from 'pivot-archive'` (see README, "Plugin API").
 */
export { definePlugin, drop, HOST_API_VERSION, PluginRegistry } from './transforms/plugins/index.js';
export type { PivotPlugin, PluginContext, PluginDrop, PluginResult } from './transforms/plugins/index.js';
export type { AttachmentRef, Conversation, Delivery, EventType, Item, Manifest, User } from './model.js';
export type { HeldMessage, Sink, SinkFactory, Stored, StoreReader, WantedMessage, WriteOutcome } from './sinks/index.js';
export { ErrorCode, PivotArchiveError, RejectReason } from './errors.js';
