// The Graph row's floor: what this machine and the stand-in answer when nothing but the creates is
// done. A bare client sends the sink's create requests (bodies built beforehand from the same
// archive's messages, no MIME work, no look-ups, no listing) with the sink's concurrency (4 per
// mailbox, `mailboxes` mailboxes at once) to the same stand-in with the same latency.
import { Agent, request } from 'node:http';
import { performance } from 'node:perf_hooks';
import { graphMessage } from '../src/sinks/graph/message.js';
import type { Delivery } from '../src/model.js';

/** Bodies kept to cycle through: enough for the spread of sizes, few enough to build quickly. */
const BODIES = 200;

export function floorBodies(deliveries: readonly Delivery[]): string[] {
  const bodies: string[] = [];
  for (const d of deliveries) {
    const message = graphMessage(d.message, d.internalDate);
    // Attachments that go after the create are not the floor's business.
    if (message.later.length === 0) bodies.push(JSON.stringify(message.create));
    if (bodies.length === BODIES) break;
  }
  return bodies;
}

/** A token for `resource` (the Graph endpoint, as the sink asks) from the managed-identity endpoint the sink uses (App Service's protocol). */
async function token(env: NodeJS.ProcessEnv, resource: string): Promise<string> {
  const url = `${env.IDENTITY_ENDPOINT}?resource=${encodeURIComponent(resource)}&api-version=2019-08-01`;
  const answer = await fetch(url, { headers: { 'X-IDENTITY-HEADER': env.IDENTITY_HEADER ?? '' } });
  if (!answer.ok) throw new Error(`the identity endpoint answered ${answer.status}`);
  return ((await answer.json()) as { access_token: string }).access_token;
}

export async function graphFloor(endpoint: string, bodies: readonly string[], requests: number, mailboxes: number, env: NodeJS.ProcessEnv): Promise<{ seconds: number; cpu: NodeJS.CpuUsage }> {
  const bearer = `Bearer ${await token(env, endpoint)}`;
  const url = new URL(endpoint);
  const agent = new Agent({ keepAlive: true, maxSockets: mailboxes * 4 });
  const post = (mailbox: string, body: string) =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        { agent, host: url.hostname, port: url.port, method: 'POST', path: `/v1.0/users/${encodeURIComponent(mailbox)}/mailFolders/inbox/messages`, headers: { authorization: bearer, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 201 ? resolve() : reject(new Error(`the stand-in answered ${res.statusCode} to a create`))));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  let sent = 0;
  const start = performance.now();
  const cpu = process.cpuUsage();
  await Promise.all(
    Array.from({ length: mailboxes * 4 }, async (_, worker) => {
      const mailbox = `floor${worker % mailboxes}@acme.example`;
      while (sent < requests) await post(mailbox, bodies[sent++ % bodies.length]!);
    }),
  );
  agent.destroy();
  return { seconds: (performance.now() - start) / 1000, cpu: process.cpuUsage(cpu) };
}
