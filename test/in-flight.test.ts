import test from 'ava';
import { InFlight } from '../src/in-flight.js';

const later = <T>(ms: number, value: T, fail = false) => new Promise<T>((resolve, reject) => setTimeout(() => (fail ? reject(new Error(String(value))) : resolve(value)), ms));

test('idle waits for every promise tracked, those tracked while it waits too, and a rejected one does not make it reject', async (t) => {
  const inFlight = new InFlight();
  const settled: string[] = [];
  const track = (ms: number, name: string, fail = false) =>
    inFlight.track(later(ms, name, fail)).then(
      () => void settled.push(name),
      () => void settled.push(`${name} failed`),
    );
  await inFlight.idle(); // none: at once
  void track(30, 'a');
  void track(10, 'b', true);
  const idle = inFlight.idle().then(() => [...settled]);
  setTimeout(() => void track(60, 'c'), 20);
  const seen = await idle;
  t.deepEqual(seen.sort(), ['a', 'b failed', 'c']);
});

test('track returns the promise it was given, its value or its rejection unchanged', async (t) => {
  const inFlight = new InFlight();
  const ok = later(1, 42);
  t.is(inFlight.track(ok), ok);
  t.is(await inFlight.track(later(1, 7)), 7);
  await t.throwsAsync(inFlight.track(later(1, 'boom', true)), { message: 'boom' });
  await inFlight.idle();
});
