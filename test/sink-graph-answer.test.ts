// The Graph sink reads a create's answer (the whole message Graph made) for its id alone, and a
// `$batch` answer's envelope without its created messages (src/sinks/graph/answer.ts): whatever the
// bytes, what it reads must be what JSON.parse would give.
import test from 'ava';
import { batchResponses, createdId } from '../src/sinks/graph/answer.js';

/** What the sink reads of a batch answer parsed whole: a response's id, status, headers and body, a 2xx object body cut to its id. */
function expectedResponses(text: string): unknown {
  let whole: unknown;
  try {
    whole = JSON.parse(text);
  } catch {
    return undefined;
  }
  const responses = (whole as { responses?: unknown } | null)?.responses;
  if (!Array.isArray(responses)) return undefined;
  return responses.map((r: unknown) => {
    const o = r as Record<string, unknown> | null;
    if (typeof o !== 'object' || o === null || Array.isArray(o)) return r;
    const read = Object.fromEntries(Object.entries(o).filter(([k]) => ['id', 'status', 'headers', 'body'].includes(k)));
    const ok = typeof o.status === 'number' && o.status >= 200 && o.status < 300;
    const body = o.body as Record<string, unknown> | null | undefined;
    if (!ok || typeof body !== 'object' || body === null || Array.isArray(body)) return read;
    return { ...read, body: body.id === undefined ? {} : { id: body.id } };
  });
}

function expectedId(text: string): unknown {
  try {
    return (JSON.parse(text) as { id?: unknown } | null)?.id;
  } catch {
    return undefined;
  }
}

/** A small seeded generator (mulberry32): the same cases on every run. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const TRICKY = ['', 'id', 'body', 'status', 'a"b', 'back\\slash', '{[}]', 'Grüße 😀', 'line\nbreak', '\u0000', '\\"', 'é', ',:'];

/** Random JSON text: values of every kind, strings with what must be skipped carefully, random spacing. */
function randomJson(next: () => number, depth: number): string {
  const space = () => [' ', '', '', '\n', '\t', '\r\n '][Math.floor(next() * 6)]!;
  const str = () => JSON.stringify(TRICKY[Math.floor(next() * TRICKY.length)]! + (next() < 0.3 ? String(Math.floor(next() * 100)) : ''));
  const kind = depth <= 0 ? Math.floor(next() * 5) : Math.floor(next() * 7);
  switch (kind) {
    case 0:
      return str();
    case 1:
      return String([0, -1, 201, 3.5, 1e3, -0.25e-2][Math.floor(next() * 6)]);
    case 2:
      return ['true', 'false', 'null'][Math.floor(next() * 3)]!;
    case 3:
    case 4:
      return str();
    case 5: {
      const n = Math.floor(next() * 4);
      return `[${space()}${Array.from({ length: n }, () => randomJson(next, depth - 1)).join(`${space()},${space()}`)}${space()}]`;
    }
    default: {
      const n = Math.floor(next() * 5);
      return `{${space()}${Array.from({ length: n }, () => `${str()}${space()}:${space()}${randomJson(next, depth - 1)}`).join(`${space()},${space()}`)}${space()}}`;
    }
  }
}

/** A batch answer as Graph might write it: responses with ids, statuses, headers and bodies in any order, sometimes odd. */
function randomBatchAnswer(next: () => number): string {
  const space = () => [' ', '', '\n  '][Math.floor(next() * 3)]!;
  const responses = Array.from({ length: Math.floor(next() * 6) }, (_, i) => {
    const members = [
      `"id":${next() < 0.8 ? JSON.stringify(String(i + 1)) : i + 1}`,
      `"status":${[201, 200, 204, 429, 424, 500, 503, 400, 404, 299, 300][Math.floor(next() * 11)]}`,
      ...(next() < 0.6 ? [`"headers":{"Retry-After":"${Math.floor(next() * 10)}","Content-Type":"application/json"}`] : []),
      ...(next() < 0.9 ? [`"body":${next() < 0.7 ? `{"@odata.etag":"W/\\"x\\"",${next() < 0.5 ? `"extra":${randomJson(next, 2)},` : ''}"id":${JSON.stringify('AAMk' + Math.floor(next() * 1e9))},"subject":${JSON.stringify(TRICKY[Math.floor(next() * TRICKY.length)])}}` : randomJson(next, 3)}`] : []),
      ...(next() < 0.1 ? [`"body":${randomJson(next, 2)}`] : []),
    ].sort(() => next() - 0.5);
    return `{${space()}${members.join(`,${space()}`)}${space()}}`;
  });
  return `${space()}{${space()}"responses"${space()}:${space()}[${responses.join(',')}]${next() < 0.2 ? `,"other":${randomJson(next, 2)}` : ''}}${space()}`;
}

test('a create answer: the id read is what JSON.parse reads, whatever else the message holds', (t) => {
  const cases = [
    '{"@odata.context":"x","@odata.etag":"W/\\"CQA\\"","id":"AAMkAD=","subject":"a } { ] [ \\" \\\\","body":{"contentType":"html","content":"<p id=\\"x\\">Grüße 😀</p>"},"toRecipients":[{"emailAddress":{"name":"A \\"B\\"","address":"a@b"}}],"id2":1}',
    '{ "subject" : "x" , "id" : "first" , "nested" : { "id" : "not this" } , "id" : "last wins" }',
    '{"nested":{"id":"inner"}}',
    '{"id":"\\u0041\\n\\"\\\\"}',
    '{"i\\u0064":"escaped key"}',
    '{"id":42}',
    '{"id":null}',
    '{"id":{"a":[1,2,{"b":"}"}]}}',
    '{}',
    '[]',
    '"id"',
    'null',
    '',
    '   ',
    'not json',
    '{"id":"x"} trailing',
    '{"id":"x",}',
    '{"id" "x"}',
    '{"id":"x" "y":1}',
    '\n\t{"id":"spaced"}\r\n',
    '{"__proto__":{"id":"p"},"id":"own"}',
    // A key whose escape is not JSON: no id, as JSON.parse reads none (not an error of its own).
    '{"\\uZZZZ":1,"id":"made"}',
    '{"id":"made","k\\q":1}',
  ];
  for (const text of cases) t.deepEqual(createdId(Buffer.from(text)), expectedId(text), text);
  const next = random(7);
  for (let n = 0; n < 3000; n++) {
    const text = randomJson(next, 4);
    t.deepEqual(createdId(Buffer.from(text)), expectedId(text), text);
  }
});

test('a create answer cut short reads as no id, at every length', (t) => {
  const whole = '{"@odata.etag":"W/\\"CQA\\"","id":"AAMkAD=","body":{"content":"<p>\\"}</p>"},"to":[{"a":1},{"b":[true,false,null]}],"n":-1.5e3}';
  t.is(createdId(Buffer.from(whole)), 'AAMkAD=');
  for (let length = 0; length < whole.length; length++) {
    const cut = whole.slice(0, length);
    t.is(createdId(Buffer.from(cut)), undefined, cut);
  }
});

test('a batch answer: the responses read are what JSON.parse reads, 2xx bodies cut to their id', (t) => {
  const cases = [
    '{"responses":[{"id":"1","status":201,"headers":{"Content-Type":"application/json"},"body":{"id":"m1","body":{"content":"} ] \\" {"}}},{"id":"2","status":429,"headers":{"Retry-After":"3"},"body":{"error":{"code":"ApplicationThrottled","message":"x"}}}]}',
    '{"responses":[{"body":{"id":"late status"},"status":201,"id":"1"}]}',
    '{"responses":[{"id":"1","status":201,"body":"base64=="}]}',
    '{"responses":[{"id":"1","status":201,"body":{"id":"a"},"body":"replaced"}]}',
    '{"responses":[{"id":"1","status":201,"body":"replaced","body":{"id":"b"}}]}',
    '{"responses":[{"id":"1","status":"201","body":{"id":"a","x":1}}]}',
    '{"responses":[1,"two",null,[3]]}',
    '{"responses":{"id":"1"}}',
    '{"responses":[]}',
    '{"other":1}',
    '{"responses":[{"id":"1","status":201,"body":{"id":"a"}}],"responses":[]}',
    '{"responses":[{"id":"1","status":201,"__proto__":{"x":1},"body":{"id":"a"}}]}',
    '{"responses":[{"id":"1","st\\u0061tus":201,"extra":[1,{"id":"no"}],"body":{"i\\u0064":"a"}}]}',
    '{"responses":[{"id":"1","status":201,"body":{"id":"a"}}]',
    '{"responses":[{"id":"1","status":201,"body":{"id":"a"}}]}}',
    '{"responses":[{"id":"1","\\uZZZZ":0,"status":201,"body":{"id":"a"}}]}',
    '{"responses":[{"id":"1","status":201,"body":{"\\x":1,"id":"a"}}]}',
    '',
  ];
  for (const text of cases) t.deepEqual(batchResponses(Buffer.from(text)), expectedResponses(text), text);
  const next = random(11);
  for (let n = 0; n < 3000; n++) {
    const text = randomBatchAnswer(next);
    t.deepEqual(batchResponses(Buffer.from(text)), expectedResponses(text), text);
  }
  for (let n = 0; n < 1000; n++) {
    const text = randomBatchAnswer(next);
    const cut = text.slice(0, Math.floor(next() * text.length));
    t.deepEqual(batchResponses(Buffer.from(cut)), expectedResponses(cut), cut);
  }
});
