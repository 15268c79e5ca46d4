/**
 * Closed: calls go through. After `failures` failures in a row it opens: calls are refused at
 * once for `resetMs`, then one trial call is let through (half-open); its success closes the
 * breaker, its failure opens it again.
 */
export class CircuitBreaker {
  private consecutive = 0;
  private openedAt: number | undefined;
  private trial = false;

  constructor(
    private readonly failures: number,
    private readonly resetMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get state(): "closed" | "open" | "half-open" {
    if (this.openedAt === undefined) return "closed";
    return this.now() - this.openedAt >= this.resetMs ? "half-open" : "open";
  }

  /** Whether a call may go now; in half-open, only one at a time. */
  allow(): boolean {
    const state = this.state;
    if (state === "closed") return true;
    if (state === "open" || this.trial) return false;
    this.trial = true;
    return true;
  }

  success(): void {
    this.consecutive = 0;
    this.openedAt = undefined;
    this.trial = false;
  }

  failure(): void {
    this.trial = false;
    this.consecutive++;
    if (this.openedAt !== undefined || this.consecutive >= this.failures) this.openedAt = this.now();
  }
}
