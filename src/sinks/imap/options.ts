import { choice, integer, text } from '../options.js';

/** The spec's form, for messages and help. */
export const IMAP_FORM = 'imap[s]://ADMIN@HOST[:PORT]/?folder=INBOX/Pivot&...';

/** The options of `imap://ADMIN@HOST/?...`, each with its default and bounds (see SPEC.md). */
export const imapOptions = {
  folder: text({
    default: 'INBOX/Pivot',
    form: 'INBOX/Pivot',
    help: "the folder path; / or . becomes the server's delimiter",
    check: (value) => (value === '' || /[\u0000-\u001f*%]/.test(value) ? 'must be a plain folder path such as INBOX/Pivot' : undefined),
  }),
  tls: choice({ choices: ['implicit', 'starttls', 'none'], default: 'implicit', help: 'none only to loopback, or with --insecure' }),
  auth: choice({ choices: ['master', 'authzid'], default: 'master', help: 'how the admin reaches a mailbox: Dovecot master user, or SASL PLAIN with an authzid' }),
  masterSeparator: text({ default: '*', form: '*', help: 'between mailbox and admin in a master-user login' }),
  pool: integer({ default: 8, min: 1, max: 64, help: 'connections at most' }),
  batch: integer({ default: 50, min: 1, max: 1000, help: 'messages appended to one mailbox per batch' }),
  window: integer({
    default: 10_000,
    min: 1,
    max: 1_000_000,
    help: 'deliveries held at once (maxInFlight): the more, the more each mailbox login carries',
  }),
  retries: integer({ default: 5, min: 0, max: 100, help: 'attempts after the first for a batch whose connection fails' }),
  retryDelay: integer({ default: 500, min: 0, max: 600_000, unit: 'ms', help: 'first retry delay, doubling each attempt' }),
  passwordEnv: text({ default: 'PIVOT_IMAP_PASSWORD', form: 'NAME', help: "the environment variable holding the admin's password" }),
  probe: text({
    form: 'MAILBOX',
    help: "a mailbox open() logs in to, to prove the admin's credentials",
    check: (value) => (value === '' || /[\u0000-\u0020\u007f]/.test(value) ? 'must name a mailbox, such as probe=jane@acme.example' : undefined),
  }),
};
