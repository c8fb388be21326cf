import test from 'ava';
import _ from 'highland';
import { inOrder } from '../src/pipeline/in-order.js';

/** Runs `items` through an inOrder stage; returns the results and the most calls that were in flight at once. */
async function through<A, B>(items: A[], limit: Parameters<typeof inOrder<A, B>>[0], fn: (x: A) => Promise<B>): Promise<{ out: B[]; peak: number }> {
  let inFlight = 0;
  let peak = 0;
  const counted = async (x: A) => {
    peak = Math.max(peak, ++inFlight);
    try {
      return await fn(x);
    } finally {
      inFlight--;
    }
  };
  const out = await new Promise<B[]>((resolve, reject) => {
    _(items)
      .through(inOrder(limit, counted))
      .stopOnError(reject)
      .toArray(resolve);
  });
  return { out, peak };
}

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

test('inOrder: results come in input order even when later calls finish first', async (t) => {
  const { out } = await through([30, 1, 20, 2, 10], { count: 5 }, async (ms) => {
    await delay(ms);
    return ms;
  });
  t.deepEqual(out, [30, 1, 20, 2, 10]);
});

test('inOrder: never more calls in flight than the count allows, and all of them run', async (t) => {
  const items = Array.from({ length: 40 }, (_, i) => i);
  const { out, peak } = await through(items, { count: 3 }, async (x) => {
    await delay(1 + (x % 4));
    return x * 2;
  });
  t.deepEqual(out, items.map((x) => x * 2));
  t.is(peak, 3);
});

test('inOrder: the weight limit holds the stage while the bytes in flight reach it, but one heavy item always runs', async (t) => {
  const sizes = [400, 400, 400, 2000, 100, 100];
  const { out, peak } = await through(sizes, { count: 10, weight: (x) => x, maxWeight: 1000 }, async (x) => {
    await delay(5);
    return x;
  });
  t.deepEqual(out, sizes);
  t.true(peak <= 3, `peak ${peak}: 400+400+400 reaches 1000 before a fourth starts`);
  const heavy = await through([5000], { count: 10, weight: (x) => x, maxWeight: 1000 }, async (x) => x);
  t.deepEqual(heavy.out, [5000]);
});

test('inOrder: a rejected call is a stream error at its turn, after the results before it', async (t) => {
  const seen: number[] = [];
  const error = await new Promise<Error>((resolve) => {
    _([1, 2, 3, 4])
      .through(
        inOrder({ count: 4 }, async (x: number) => {
          await delay(x === 3 ? 1 : 10);
          if (x === 3) throw new Error('three failed');
          return x;
        }),
      )
      .stopOnError((err: Error) => resolve(err))
      .each((x) => void seen.push(x));
  });
  t.is(error.message, 'three failed');
  // The error stops the stream at once; what was pushed before it reaches the consumer just after.
  await delay(20);
  t.deepEqual(seen, [1, 2], 'the results before the failed call, and nothing after it');
});

test('inOrder: an empty input ends at once', async (t) => {
  const { out, peak } = await through([] as number[], { count: 2 }, async (x) => x);
  t.deepEqual(out, []);
  t.is(peak, 0);
});

test('inOrder: an error from upstream comes after the results of what was in flight, so they are never dropped', async (t) => {
  const seen: number[] = [];
  const upstream = _<number>((push, next) => {
    push(null, 1);
    push(null, 2);
    push(new Error('the source failed'));
    push(null, _.nil);
    void next;
  });
  const error = await new Promise<Error>((resolve) => {
    upstream
      .through(
        inOrder({ count: 4 }, async (x: number) => {
          await delay(10);
          return x;
        }),
      )
      .stopOnError((err: Error) => resolve(err))
      .each((x) => void seen.push(x));
  });
  t.is(error.message, 'the source failed');
  await delay(20);
  t.deepEqual(seen, [1, 2]);
});
