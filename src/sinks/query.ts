/** A whole-number option from a sink spec's query, with its default and bounds. */
export function integerOption(value: string | null, fallback: number, min: number, max: number, name: string, bad: (why: string) => Error): number {
  if (value === null) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min || n > max) throw bad(`${name} must be a whole number from ${min} to ${max}`);
  return n;
}
