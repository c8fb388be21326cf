import _ from 'highland';

/** How much an async stage may hold in flight: a count, and optionally a total weight in bytes. */
export interface InFlightLimit<A> {
  count: number;
  /** Size of one input; the stage waits while the total would pass `maxWeight` (one always runs). */
  weight?: (x: A) => number;
  maxWeight?: number;
}

/** One function for every result's `catch`, not a closure each. */
const ignore = (): void => undefined;

/**
 * An async stage with bounded work in flight, results in input order: how the chain overlaps
 * sink writes. One highland stream per stage, not one per item (`flatMap(x => _(promise))` costs
 * a stream per item). A rejected promise becomes a stream error at its turn, in order.
 * `ended` is called once the input has ended, when `fn` has been called for every input.
 */
export function inOrder<A, B>(limit: InFlightLimit<A>, fn: (x: A) => Promise<B>, ended?: () => void): (source: Highland.Stream<A>) => Highland.Stream<B> {
  return (source) => {
    // A queue read from `head`: shift() on tens of thousands in flight (a network sink's window) moved them all each time.
    let pending: { result: Promise<B>; weight: number }[] = [];
    let head = 0;
    let weight = 0;
    const inFlight = () => pending.length - head;
    const full = () => inFlight() >= limit.count || weight >= (limit.maxWeight ?? Infinity);
    const any = () => inFlight() > 0;
    /** Pushes the oldest results, in order (an error at its turn), while `more()` holds; then `then()`. */
    const release = (push: (err: Error | null, x?: B | Highland.Nil) => void, more: () => boolean, then: () => void): void => {
      if (!more()) return then();
      const oldest = pending[head++]!;
      if (head >= 1024 && head * 2 >= pending.length) {
        pending = pending.slice(head);
        head = 0;
      }
      weight -= oldest.weight;
      oldest.result.then(
        (r) => {
          push(null, r);
          release(push, more, then);
        },
        (e: Error) => {
          push(e);
          release(push, more, then);
        },
      );
    };
    return source.consume((err, x, push, next) => {
      if (err) {
        // An error from upstream comes after the results of what was already in flight: they
        // settle and are counted before anything downstream stops on it.
        release(push, any, () => {
          push(err);
          next();
        });
        return;
      }
      if (_.isNil(x)) {
        // `fn` has been called for every input: told before their results are waited for.
        ended?.();
        release(push, any, () => push(null, _.nil));
        return;
      }
      const result = fn(x as A);
      result.catch(ignore); // reported when its turn comes, not as unhandled
      const w = limit.weight?.(x as A) ?? 0;
      pending.push({ result, weight: w });
      weight += w;
      release(push, full, next);
    });
  };
}

/**
 * Calls `fn` on each item in order, waiting only when it returns a promise: the end of a chain
 * whose work is mostly synchronous (the source told what settled) costs no promise per item.
 */
export function inTurn<A>(fn: (x: A) => Promise<void> | void): (source: Highland.Stream<A>) => Highland.Stream<A> {
  return (source) =>
    source.consume((err, x, push, next) => {
      if (err) {
        push(err);
        next();
        return;
      }
      if (_.isNil(x)) {
        push(null, x);
        return;
      }
      let done: Promise<void> | void;
      try {
        done = fn(x as A);
      } catch (e) {
        push(e as Error);
        next();
        return;
      }
      if (!done) {
        push(null, x as A);
        next();
        return;
      }
      done.then(
        () => {
          push(null, x as A);
          next();
        },
        (e: Error) => {
          push(e);
          next();
        },
      );
    });
}
