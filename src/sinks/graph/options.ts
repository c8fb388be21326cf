import { choice, integer, text, environmentName } from '../options.js';

/** The spec's form, for messages and help. */
export const GRAPH_FORM = 'graph://TENANT_ID/?clientId=APP_ID&folder=Inbox/Pivot&...';

/** An https URL with no path, query or credentials (an http one is refused later unless loopback or --insecure). */
/** The check of an option that is an origin, with the default as its example. */
function origin(example: string): (value: string) => string | undefined {
  return (value) => {
    let url: URL;
    try {
      url = new URL(value);
    } catch {
      return `must be a URL such as ${example}`;
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must be an https:// URL';
    if (url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '')) return `must be a bare origin such as ${example} (no path, query or user)`;
    return undefined;
  };
}

/** The options of `graph://TENANT_ID/?...`, each with its default and bounds (see SPEC.md). */
export const graphOptions = {
  clientId: text({
    form: 'APP_ID',
    help: 'the app (client) id; with managedIdentity, a user-assigned identity',
    check: (value) => (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value) ? undefined : 'must be a GUID such as 00000000-0000-0000-0000-000000000000'),
  }),
  credential: choice({ choices: ['app', 'managedIdentity'], default: 'app', help: "app: the app registration's client secret, or its certificate with clientCertificate=; managedIdentity: the Azure host's" }),
  secretEnv: text({ default: 'PIVOT_GRAPH_CLIENT_SECRET', form: 'NAME', check: environmentName, help: 'the variable holding the client secret' }),
  clientCertificate: text({
    form: 'PATH',
    help: 'a PEM file: private key and certificate',
    check: (value) => (value === '' || /[\u0000-\u001f]/.test(value) ? 'must be a file path' : undefined),
  }),
  folder: text({
    default: 'Inbox/Pivot',
    form: 'Inbox/Pivot',
    help: 'a well-known or top-level folder, then children by name; created if missing',
    check: (value) => (value === '' || value.split('/').some((part) => part.trim() === '') || /[\u0000-\u001f]/.test(value) ? 'must be a folder path such as Inbox/Pivot' : undefined),
  }),
  mode: choice({ choices: ['json', 'importMime'], default: 'json', help: 'json (v1.0) or importMime (beta API: the exact MIME)' }),
  concurrency: integer({ default: 4, min: 1, max: 4, help: "requests in flight per mailbox (Outlook's limit is 4)" }),
  mailboxes: integer({ default: 16, min: 1, max: 256, help: 'mailboxes delivered to in parallel' }),
  // Graph: "JSON batch requests are currently limited to 20 individual requests."
  batch: integer({ default: 20, min: 1, max: 20, help: "a mailbox's creates sent in one JSON batch ($batch), four at a time at Outlook; 1: each alone" }),
  maxMessageSize: integer({ default: 35, min: 1, max: 150, unit: 'MB', help: "the mailboxes' message size limit (Exchange Online's default; an admin may raise it to 150): a larger message fails with that reason, unsent" }),
  retries: integer({ default: 6, min: 0, max: 50, help: 'attempts after the first after a 429, 5xx or network failure' }),
  retryDelay: integer({ default: 1000, min: 0, max: 600_000, unit: 'ms', help: 'first backoff after a 5xx or network failure, doubling, jittered' }),
  lateCopyWait: integer({ default: 60_000, min: 0, max: 600_000, unit: 'ms', help: "after an item was made again because a create's answer was lost, how long the close waits for Graph to finish the lost create before it removes the copies" }),
  graphEndpoint: text({ default: 'https://graph.microsoft.com', form: 'https://graph.microsoft.com', help: 'the Graph host (national clouds: see the docs)', check: origin('https://graph.microsoft.com') }),
  authorityHost: text({ default: 'https://login.microsoftonline.com', form: 'https://login.microsoftonline.com', help: 'the Entra ID login host (national clouds: see the docs)', check: origin('https://login.microsoftonline.com') }),
  probe: text({
    form: 'MAILBOX',
    help: 'a mailbox open() reads, to prove access',
    check: (value) => (/^[^\s@/]+@[^\s@/]+$/.test(value) ? undefined : 'must name a mailbox, such as probe=jane@acme.example'),
  }),
};
