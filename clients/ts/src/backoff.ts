/**
 * Exponential backoff with jitter between reconnection attempts, with the same defaults as the
 * Rust client (`holdfast-client`'s `Backoff`): 250 ms doubling up to 30 s, full jitter.
 *
 * The delay before attempt `n` (counting from zero) is drawn from `[cap * (1 - jitter), cap]`
 * where `cap = min(max, min * 2^n)`. Full jitter (`jitter = 1`) draws uniformly from `[0, cap]`,
 * which spreads a herd of clients dropped at the same instant over the whole window.
 */

/** Settings of a {@link Backoff}; every field is optional and defaults as documented. */
export interface BackoffOptions {
  /** The cap of the first attempt, in milliseconds (default 250). */
  minMs?: number;
  /** The largest cap, in milliseconds (default 30000). */
  maxMs?: number;
  /** The randomised fraction of the cap, from 0 (none) to 1 (full, the default). */
  jitter?: number;
}

/** A validated exponential backoff policy. */
export class Backoff {
  static readonly DEFAULT_MIN_MS = 250;
  static readonly DEFAULT_MAX_MS = 30_000;
  static readonly DEFAULT_JITTER = 1;

  /** The cap of the first attempt. */
  readonly minMs: number;
  /** The largest cap. */
  readonly maxMs: number;
  /** The randomised fraction of the cap. */
  readonly jitter: number;
  /** The source of randomness in `[0, 1)`; replaceable so tests are deterministic. */
  private readonly random: () => number;

  /** Checks that `min > 0`, `max >= min` and `jitter` is in `[0, 1]`, and throws otherwise. */
  constructor(options: BackoffOptions = {}, random: () => number = Math.random) {
    const minMs = options.minMs ?? Backoff.DEFAULT_MIN_MS;
    const maxMs = options.maxMs ?? Backoff.DEFAULT_MAX_MS;
    const jitter = options.jitter ?? Backoff.DEFAULT_JITTER;
    if (!(minMs > 0)) throw new RangeError(`backoff minimum must be greater than zero, got ${minMs}`);
    if (!(maxMs >= minMs)) throw new RangeError(`backoff maximum ${maxMs} is below the minimum ${minMs}`);
    if (!(jitter >= 0 && jitter <= 1)) throw new RangeError(`backoff jitter ${jitter} is outside [0, 1]`);
    this.minMs = minMs;
    this.maxMs = maxMs;
    this.jitter = jitter;
    this.random = random;
  }

  /** The cap of attempt `attempt` (counting from zero), before jitter. */
  cap(attempt: number): number {
    // 2^40 times any sane minimum is far above any maximum, so larger exponents are clamped.
    return Math.min(this.maxMs, this.minMs * 2 ** Math.min(attempt, 40));
  }

  /** The delay before attempt `attempt`, in milliseconds. */
  delay(attempt: number): number {
    const cap = this.cap(attempt);
    return cap * (1 - this.jitter) + cap * this.jitter * this.random();
  }

  /**
   * The delay after a server's hint (`server_shutdown.reconnect_after_ms`): the hint plus a
   * random spread of up to `hint * jitter` (or `min * jitter` for a zero hint), so a drained
   * node's clients do not all arrive at the next node at once.
   */
  jitterHint(hintMs: number): number {
    const spread = (hintMs > 0 ? hintMs : this.minMs) * this.jitter;
    return hintMs + spread * this.random();
  }
}
