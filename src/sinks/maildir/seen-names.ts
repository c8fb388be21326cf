/**
 * The base names of our files a folder's listing saw as `cur/<name>:2,S`, for the days the run
 * delivers: a Bloom filter of 16 bits a name (11 probes: about 1 false "seen" in 2,000, never a
 * false "not seen"). A name the listing saw that is not there now was renamed (a client's flag
 * change) or removed since, so the folder is listed again before the item is called absent. A
 * false "seen" costs one listing, never an item; each listing draws its own seed, so a name
 * falsely seen by one is falsely seen by the next only by chance again.
 */
export class SeenNames {
  private readonly bits: Uint32Array;
  private readonly size: number;

  /** `hashes`: two 32-bit halves per name (`nameHash`), `count` names. */
  constructor(
    hashes: Uint32Array,
    count: number,
    private readonly seed: number,
  ) {
    this.size = Math.max(MIN_BITS, Math.ceil((count * BITS_PER_NAME) / 32) * 32);
    this.bits = new Uint32Array(this.size / 32);
    for (let i = 0; i < count; i++) {
      for (let probe = 0; probe < PROBES; probe++) {
        const bit = this.probe(hashes[2 * i]!, hashes[2 * i + 1]!, probe);
        this.bits[bit >>> 5]! |= 1 << (bit & 31);
      }
    }
  }

  has(base: string): boolean {
    const [a, b] = nameHash(base);
    for (let probe = 0; probe < PROBES; probe++) {
      const bit = this.probe(a, b, probe);
      if ((this.bits[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }

  /**
   * The bit of a name's `probe`-th probe: double hashing, each value mixed again (plain `a + i*b`
   * modulo a size that shares factors with `b` hit the same few bits: 1 in 65 false with 4 names).
   */
  private probe(a: number, b: number, probe: number): number {
    return mix((a ^ this.seed) + Math.imul(probe, b | 1)) % this.size;
  }
}

const BITS_PER_NAME = 16;
const PROBES = 11;
/** At least 256 bits (32 bytes) a filter: a few names in 16 bits each would make many false "seen". */
const MIN_BITS = 256;

/**
 * Two 32-bit numbers from a base name of ours (`<sec>.P<32 hex>[.C<16 hex>].pivot-archive`):
 * its hex is a sha256 already, so slices of it are the hash, with the seconds and the variant's
 * hex folded in.
 */
export function nameHash(base: string): [number, number] {
  const p = base.indexOf('.P') + 2;
  const c = base.indexOf('.C', p);
  const variant = c < 0 ? 0 : parseInt(base.slice(c + 2, c + 10), 16);
  const seconds = Math.imul(parseInt(base, 10) | 0, 0x85ebca6b);
  return [(parseInt(base.slice(p, p + 8), 16) ^ seconds ^ variant) >>> 0, (parseInt(base.slice(p + 8, p + 16), 16) ^ variant) >>> 0];
}

/** The UTC day (days since 1970) of a base name of ours: the day of its seconds. */
export function dayOfName(base: string): number {
  return Math.floor(parseInt(base, 10) / 86400);
}

/** The UTC day of a time in milliseconds, as `dayOfName` reckons a file's. */
export function dayOfTime(ms: number): number {
  return Math.floor(Math.floor(ms / 1000) / 86400);
}

/** murmur3's finaliser: every bit of the input moves every bit of the output. */
function mix(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Collects name hashes while a listing runs (the count is known only at its end). */
export class NameHashes {
  hashes = new Uint32Array(64);
  count = 0;

  push(base: string): void {
    if (2 * this.count === this.hashes.length) {
      const grown = new Uint32Array(this.hashes.length * 2);
      grown.set(this.hashes);
      this.hashes = grown;
    }
    const [a, b] = nameHash(base);
    this.hashes[2 * this.count] = a;
    this.hashes[2 * this.count + 1] = b;
    this.count++;
  }

  /** The filter, or undefined when the listing saw no name. */
  filter(seed: number): SeenNames | undefined {
    return this.count === 0 ? undefined : new SeenNames(this.hashes, this.count, seed);
  }
}
