import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { simpleParser, type ParsedMail } from 'mailparser';

export interface StoredMessage {
  mailbox: string;
  file: string;
  raw: Buffer;
  mtime: Date;
  parsed: ParsedMail;
  itemId: string;
}

/** Reads every message of `root/<mailbox>/<folder>/{cur,new}` and parses it with mailparser. */
export async function readMaildir(root: string, folder = '.INBOX.Pivot'): Promise<StoredMessage[]> {
  const messages: StoredMessage[] = [];
  let mailboxes: string[];
  try {
    mailboxes = await readdir(root);
  } catch {
    return [];
  }
  for (const mailbox of mailboxes.sort()) {
    for (const sub of ['cur', 'new']) {
      const dir = join(root, mailbox, folder, sub);
      let files: string[];
      try {
        files = await readdir(dir);
      } catch {
        continue;
      }
      for (const file of files.sort()) {
        const raw = await readFile(join(dir, file));
        const parsed = await simpleParser(raw);
        const itemId = String(parsed.headers.get('x-pivot-item-id') ?? '');
        messages.push({ mailbox, file, raw, mtime: (await stat(join(dir, file))).mtime, parsed, itemId });
      }
    }
  }
  return messages;
}

/** `mailbox itemId` pairs, sorted: the shape every end-to-end comparison uses. */
export function pairs(messages: { mailbox: string; itemId: string }[]): string[] {
  return messages.map((m) => `${m.mailbox} ${m.itemId}`).sort();
}
