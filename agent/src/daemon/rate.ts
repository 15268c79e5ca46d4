/** Events per second over a sliding window: a camera's frame rate in and out. */
export class RateMeter {
  private readonly times: number[] = [];

  constructor(
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  mark(): void {
    this.times.push(this.now());
    this.trim();
  }

  get perSecond(): number {
    this.trim();
    if (this.times.length < 2) return 0;
    const span = (this.now() - this.times[0]!) / 1000;
    return span > 0 ? Math.round((this.times.length / Math.max(span, 1)) * 100) / 100 : 0;
  }

  private trim(): void {
    const cutoff = this.now() - this.windowMs;
    while (this.times.length > 0 && this.times[0]! < cutoff) this.times.shift();
  }
}
