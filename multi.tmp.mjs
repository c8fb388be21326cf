import { ImapFlow } from 'imapflow';
import { startDovecot, removeDovecot, ADMIN_PASSWORD } from '/work/main/dist/test/helpers/dovecot.js';
const d = await startDovecot(['jane@acme.example']);
const c = new ImapFlow({ host: '127.0.0.1', port: d.port, secure: false, doSTARTTLS: false, logger: false, disableAutoIdle: true, auth: { user: 'jane@acme.example*archiver', pass: ADMIN_PASSWORD } });
await c.connect();
await c.mailboxCreate('INBOX/P');
await c.mailboxOpen('INBOX/P');
const msg = (i) => Buffer.from(`From: a@b.c\r\nTo: d@e.f\r\nSubject: x\r\nMessage-ID: <${i}@x>\r\n\r\n` + 'hello\r\n'.repeat(200));
let t = Date.now();
for (let b = 0; b < 6; b++) {
  const attrs = [{ type: 'ATOM', value: 'INBOX/P' }];
  for (let i = 0; i < 50; i++) { attrs.push([{ type: 'ATOM', value: '\\Seen' }]); attrs.push({ type: 'STRING', value: '23-Nov-2026 09:00:00 +0000' }); attrs.push({ type: 'LITERAL', value: msg(b * 50 + i) }); }
  const r = await c.exec('APPEND', attrs, {});
  if (b === 0) console.log(JSON.stringify(r.response.attributes).slice(0, 300));
}
console.log('multiappend', (300 / ((Date.now() - t) / 1000)).toFixed(0), '/s');
const st = await c.status('INBOX/P', { messages: true }); console.log(st);
await c.logout(); await removeDovecot(d);
