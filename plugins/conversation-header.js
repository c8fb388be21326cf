// Example plugin: adds the conversation's name and type, and the sender's company, as headers,
// so a compliance reviewer can search on them (e.g. X-Pivot-Conversation-Type: room).
// An item from a conversation listed in PIVOT_SKIP_CONVERSATIONS (comma-separated ids) is
// dropped with a recorded reason, to show drop(): nothing is ever skipped silently.
import { definePlugin, drop } from 'pivot-archive';

const skipped = new Set((process.env.PIVOT_SKIP_CONVERSATIONS ?? '').split(',').filter(Boolean));

export default definePlugin({
  name: 'conversation-header',
  version: '1.0.0',
  hostApi: '^1.0.0',
  transform(item) {
    if (skipped.has(item.conversation.id)) return drop(`conversation ${item.conversation.id} is in PIVOT_SKIP_CONVERSATIONS`);
    const headers = { ...item.headers, 'X-Pivot-Conversation-Type': item.conversation.type };
    if (item.conversation.name) headers['X-Pivot-Conversation-Name'] = item.conversation.name;
    if (item.sender.company) headers['X-Pivot-Sender-Company'] = item.sender.company;
    return { ...item, headers };
  },
});
