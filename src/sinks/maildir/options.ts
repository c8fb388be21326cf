import { choice, integer, text } from '../options.js';

/** The spec's form, for messages and help. */
export const MAILDIR_FORM = 'maildir:DIR[?folder=&concurrency=&links=&owner=]';

/** The options of `maildir:DIR?...`, each with its default and bounds (see SPEC.md). */
export const maildirOptions = {
  folder: text({
    default: '.INBOX.Pivot',
    form: '.INBOX.Pivot',
    help: 'the Pivot folder on disk, Maildir++ (.INBOX.Pivot shows as INBOX/Pivot in Dovecot; .Pivot suits a Courier-style INBOX. namespace)',
    check: (value) =>
      /^\.[^/\\.\u0000-\u001f][^/\\\u0000-\u001f]*$/.test(value) && !value.includes('..') ? undefined : `${JSON.stringify(value)} is not a Maildir++ folder name such as .INBOX.Pivot`,
  }),
  concurrency: integer({ default: 4096, min: 1, max: 65536, help: 'deliveries held at once (the file worker makes what they need durable in groups of up to 4,096 files)' }),
  links: choice({ choices: ['1', '0'], default: '1', help: "1: an item's copies for other mailboxes are hard links to its first file; 0: a file each" }),
  owner: text({ form: 'USER[:GROUP]', help: 'run as root: who owns what the sink creates (names or numbers); default the owner of DIR' }),
};
