import { choice, integer, text, environmentName } from '../options.js';

/** The spec's forms, for messages and help: an admin's password, or an app's token (Microsoft 365). */
export const IMAP_FORM = 'imap[s]://ADMIN@HOST[:PORT]/?folder=INBOX/Pivot&... or imap[s]://HOST[:PORT]/?auth=xoauth2&tenant=TENANT_ID&clientId=APP_ID&...';

/**
 * A folder path the server can take: no wildcard (`*`, `%`) or control character, and no empty
 * part (a leading, trailing or doubled `/` or `.`, each of which becomes the server's delimiter):
 * Dovecot answers such a name `NO [CANNOT] Invalid mailbox name` (or, for a trailing one, creates
 * the parent and then refuses to select it), so it is refused here, before any login.
 */
export function folderCheck(value: string): string | undefined {
  if (value === '' || /[\u0000-\u001f*%]/.test(value)) return 'must be a plain folder path such as INBOX/Pivot';
  const parts = value.split(/[/.]/);
  if (parts.includes('')) {
    const kept = parts.filter((part) => part !== '');
    const hint = kept.length > 0 ? `: write ${kept.join('/')}` : '';
    return `${JSON.stringify(value)} has an empty part (a leading, trailing or doubled "/" or ".", each of which becomes the server's hierarchy delimiter)${hint}`;
  }
  return undefined;
}

/** A tenant or client id: a GUID, or a tenant's domain name. */
const ENTRA_ID = /^[A-Za-z0-9][A-Za-z0-9.-]*$/;

/**
 * The options of `imap://ADMIN@HOST/?...` and `imap://HOST/?auth=xoauth2&...`, each with its
 * default and bounds (see SPEC.md). `masterSeparator` and `passwordEnv` apply to the password
 * modes (master, authzid) only; `credential`, `tenant`, `clientId`, `clientCertificate`,
 * `secretEnv` and `authorityHost` to xoauth2 only: the parser refuses them elsewhere.
 */
export const imapOptions = {
  folder: text({
    default: 'INBOX/Pivot',
    form: 'INBOX/Pivot',
    help: "the folder path; / or . becomes the server's delimiter",
    check: folderCheck,
  }),
  tls: choice({ choices: ['implicit', 'starttls', 'none'], default: 'implicit', help: 'none only to loopback, or with --insecure' }),
  auth: choice({
    choices: ['master', 'authzid', 'xoauth2'],
    default: 'master',
    help: "how the sink reaches a mailbox: the admin's password as a Dovecot master user or with a SASL PLAIN authzid, or SASL XOAUTH2 with an app-only token (Microsoft 365)",
  }),
  masterSeparator: text({ default: '*', form: '*', help: 'master: between mailbox and admin in a master-user login' }),
  pool: integer({ default: 8, min: 1, max: 64, help: 'connections at most' }),
  batch: integer({ default: 50, min: 1, max: 1000, help: 'messages appended to one mailbox per batch' }),
  window: integer({
    default: 50_000,
    min: 1,
    max: 1_000_000,
    help: 'deliveries held at once (maxInFlight): the more, the more each mailbox login carries',
  }),
  retries: integer({ default: 5, min: 0, max: 100, help: 'attempts after the first for a batch whose connection fails' }),
  retryDelay: integer({ default: 500, min: 0, max: 600_000, unit: 'ms', help: 'first retry delay, doubling each attempt' }),
  passwordEnv: text({ default: 'PIVOT_IMAP_PASSWORD', form: 'NAME', check: environmentName, help: "master, authzid: the environment variable holding the admin's password" }),
  credential: choice({
    choices: ['app', 'managedIdentity'],
    default: 'app',
    help: "xoauth2: the app registration's secret or certificate, or the managed identity of the Azure host the tool runs on",
  }),
  tenant: text({
    form: 'TENANT_ID',
    help: 'xoauth2: the Entra ID tenant (directory) id or domain',
    // The multi-tenant aliases issue no app-only token (client credentials need the directory itself).
    check: (value) =>
      /^(common|organizations|consumers)$/i.test(value) ? `must be your tenant's own id or domain: "${value}" gives no app-only token` : ENTRA_ID.test(value) ? undefined : 'must be a tenant id or domain, such as tenant=contoso.onmicrosoft.com',
  }),
  clientId: text({
    form: 'APP_ID',
    help: "xoauth2: the app registration's application (client) id; with credential=managedIdentity, a user-assigned identity's client id",
    check: (value) => (ENTRA_ID.test(value) ? undefined : 'must be an application (client) id'),
  }),
  clientCertificate: text({ form: '/path.pem', help: "xoauth2: a PEM file holding the app's certificate and its private key, instead of a client secret" }),
  secretEnv: text({ default: 'PIVOT_IMAP_CLIENT_SECRET', form: 'NAME', check: environmentName, help: "xoauth2: the environment variable holding the app's client secret" }),
  authorityHost: text({
    default: 'https://login.microsoftonline.com',
    form: 'https://HOST',
    help: 'xoauth2: the Entra ID login host (US Government: https://login.microsoftonline.us; China: https://login.chinacloudapi.cn)',
    check: (value) => (/^https:\/\/[^\s/?#@]+\/?$/i.test(value) ? undefined : 'must be an https:// host, such as https://login.microsoftonline.us'),
  }),
  probe: text({
    form: 'MAILBOX',
    help: "a mailbox open() logs in to, to prove the admin's credentials (xoauth2: the app's token)",
    check: (value) => (value === '' || /[\u0000-\u0020\u007f]/.test(value) ? 'must name a mailbox, such as probe=jane@acme.example' : undefined),
  }),
};
