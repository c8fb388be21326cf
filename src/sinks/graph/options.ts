import { choice, integer, text } from '../options.js';

/** The spec's form, for messages and help. */
export const GRAPH_FORM = 'graph://TENANT_ID/?clientId=APP_ID&folder=Inbox/Pivot&...';

/** An https URL with no path, query or credentials (an http one is refused later unless loopback or --insecure). */
function checkOrigin(value: string): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be a URL such as https://graph.microsoft.com';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'must be an https:// URL';
  if (url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '')) return 'must be a bare origin such as https://graph.microsoft.com (no path, query or user)';
  return undefined;
}

/** The options of `graph://TENANT_ID/?...`, each with its default and bounds (see SPEC.md). */
export const graphOptions = {
  clientId: text({
    form: 'APP_ID',
    help: 'the app registration (client) id; with credential=managedIdentity, a user-assigned identity',
    check: (value) => (/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(value) ? undefined : 'must be a GUID such as 00000000-0000-0000-0000-000000000000'),
  }),
  credential: choice({ choices: ['secret', 'certificate', 'managedIdentity'], default: 'secret', help: 'where tokens come from (certificate is implied by clientCertificate=)' }),
  secretEnv: text({ default: 'PIVOT_GRAPH_CLIENT_SECRET', form: 'NAME', help: "the environment variable holding the app's client secret" }),
  clientCertificate: text({
    form: 'PATH',
    help: 'a PEM file holding the private key and certificate of the app registration',
    check: (value) => (value === '' || /[\u0000-\u001f]/.test(value) ? 'must be a file path' : undefined),
  }),
  folder: text({
    default: 'Inbox/Pivot',
    form: 'Inbox/Pivot',
    help: 'the folder path: a well-known folder (Inbox, Archive, ...) or a top-level folder, then child folders by display name, created when missing',
    check: (value) => (value === '' || value.split('/').some((part) => part.trim() === '') || /[\u0000-\u001f]/.test(value) ? 'must be a folder path such as Inbox/Pivot' : undefined),
  }),
  mode: choice({ choices: ['json', 'importMime'], default: 'json', help: 'json: create from JSON (v1.0); importMime: the exact MIME (beta API, Mail-Advanced.ReadWrite.All)' }),
  concurrency: integer({ default: 4, min: 1, max: 4, help: "requests in flight per mailbox (Outlook's limit is 4)" }),
  mailboxes: integer({ default: 16, min: 1, max: 256, help: 'mailboxes delivered to in parallel' }),
  retries: integer({ default: 6, min: 0, max: 50, help: 'attempts after the first for a request refused 429, 5xx or a network failure' }),
  retryDelay: integer({ default: 1000, min: 0, max: 600_000, unit: 'ms', help: 'first backoff delay after a 5xx or network failure, doubling, with jitter (429 waits Retry-After)' }),
  graphEndpoint: text({ default: 'https://graph.microsoft.com', form: 'https://graph.microsoft.com', help: 'the Graph host (national clouds: https://graph.microsoft.us, https://dod-graph.microsoft.us, https://microsoftgraph.chinacloudapi.cn)', check: checkOrigin }),
  authorityHost: text({ default: 'https://login.microsoftonline.com', form: 'https://login.microsoftonline.com', help: 'the Entra ID login host (https://login.microsoftonline.us, https://login.chinacloudapi.cn)', check: checkOrigin }),
  probe: text({
    form: 'MAILBOX',
    help: 'a mailbox open() reads (its Inbox) to prove the app may reach mailboxes',
    check: (value) => (/^[^\s@/]+@[^\s@/]+$/.test(value) ? undefined : 'must name a mailbox, such as probe=jane@acme.example'),
  }),
};
