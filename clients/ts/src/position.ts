/**
 * Per-room stream positions: the bookkeeping that keeps duplicates away from the application
 * and turns missing sequence numbers into gap reports.
 *
 * Every room-scoped frame carries the room's `seq` (gapless, increasing) and `epoch`. A
 * {@link StreamPosition} remembers the last `(seq, epoch)` handed to the application and judges
 * each new frame: at or below the position in the same epoch it is a duplicate (a replay
 * overlapping what arrived before a drop); beyond the next number it reveals a gap.
 */

/** What to do with one room-scoped frame. */
export type Verdict =
  | { kind: "deliver" }
  | { kind: "duplicate" }
  | { kind: "gap"; from: number; to: number }
  | { kind: "new_epoch" };

/** The last position of one room's stream that the application has seen. */
export class StreamPosition {
  /** The highest sequence number delivered (or skipped over by a reported gap). */
  seq: number;
  /** The epoch `seq` belongs to; numbers from another epoch are not comparable. */
  epoch: string;

  /** Starts at `seq` (as reported by `joined` or `reconnected`) in `epoch`. */
  constructor(seq: number, epoch: string) {
    this.seq = seq;
    this.epoch = epoch;
  }

  /** Judges a frame at `seq` in `epoch` and advances the position unless it is a duplicate. */
  observe(seq: number, epoch: string): Verdict {
    if (epoch !== this.epoch) {
      this.epoch = epoch;
      this.seq = seq;
      return { kind: "new_epoch" };
    }
    if (seq <= this.seq) return { kind: "duplicate" };
    const verdict: Verdict =
      seq === this.seq + 1 ? { kind: "deliver" } : { kind: "gap", from: this.seq + 1, to: seq - 1 };
    this.seq = seq;
    return verdict;
  }

  /**
   * Moves past the gap `from..=to` the server reported, so the frames after it are not
   * reported again. Returns the part the application has not seen, or `undefined`.
   */
  skipGap(from: number, to: number, epoch: string): { from: number; to: number } | undefined {
    if (epoch !== this.epoch) {
      this.epoch = epoch;
      this.seq = to;
      return { from, to };
    }
    if (to <= this.seq) return undefined;
    const start = Math.max(from, this.seq + 1);
    this.seq = to;
    return { from: start, to };
  }

  /**
   * Moves forward to `seq` without delivering anything, as after `reconnected` reports the
   * room's position past the resume's own frames (which the resuming member does not receive).
   */
  catchUp(seq: number, epoch: string): void {
    if (epoch !== this.epoch) {
      this.epoch = epoch;
      this.seq = seq;
      return;
    }
    if (seq > this.seq) this.seq = seq;
  }
}
