import test from 'ava';
import { Slots } from '../src/sinks/slots.js';

test('slots: a taker of several is served whole and in order: single takers that come after it do not go first', async (t) => {
  const slots = new Slots(4);
  t.true(slots.tryTake(3));
  const order: string[] = [];
  const four = slots.wait(4).then(() => order.push('four'));
  // One slot is free, but the taker of four waits first: a later single one must not take it.
  t.false(slots.tryTake());
  const one = slots.wait().then(() => order.push('one'));
  slots.give(3);
  await four;
  await new Promise((r) => setImmediate(r));
  t.deepEqual(order, ['four']);
  slots.give(4);
  await one;
  t.deepEqual(order, ['four', 'one']);
  t.false(slots.tryTake(4), 'three free, one held');
  t.true(slots.tryTake(3));
});

test('slots: more than it has is refused, not waited for forever', (t) => {
  const slots = new Slots(4);
  t.throws(() => slots.wait(5), { instanceOf: RangeError });
});
