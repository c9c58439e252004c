/** A minimal typed event emitter, so the browser build needs no runtime dependency. */

/** A listener for event `K` of the event map `M`. */
export type Listener<M, K extends keyof M> = (payload: M[K]) => void;

/** Emits the events of map `M` (event name to payload type). */
export class Emitter<M> {
  /** Listeners by event name; a `Set` so a listener added twice runs once. */
  private readonly listeners = new Map<keyof M, Set<(payload: never) => void>>();

  /** Adds `listener` for `event` and returns a function that removes it. */
  on<K extends keyof M>(event: K, listener: Listener<M, K>): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener as (payload: never) => void);
    return () => this.off(event, listener);
  }

  /** Adds `listener` for the next `event` only. */
  once<K extends keyof M>(event: K, listener: Listener<M, K>): () => void {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  /** Removes `listener` from `event`. */
  off<K extends keyof M>(event: K, listener: Listener<M, K>): void {
    this.listeners.get(event)?.delete(listener as (payload: never) => void);
  }

  /**
   * Calls every listener of `event` with `payload`. A listener that throws does not stop the
   * others or the client; the exception is reported asynchronously so it still shows up.
   */
  protected emit<K extends keyof M>(event: K, payload: M[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<M, K>)(payload);
      } catch (error) {
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
