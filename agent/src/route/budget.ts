import Conf from "conf";

interface BudgetState {
  month: string;
  used: number;
}

/** "2025-11": the hosted free tier counts calls per calendar month (UTC). */
export function monthOf(date: Date): string {
  return date.toISOString().slice(0, 7);
}

/**
 * The month's cloud calls, persisted in the state dir (conf writes it atomically), so a
 * restart never resets the count. A call is reserved before it is made: the budget is never
 * exceeded, even by calls that then fail.
 */
export class CloudBudget {
  private readonly store: Conf<BudgetState>;

  constructor(
    stateDir: string,
    readonly limit: number,
    private readonly now: () => Date = () => new Date(),
  ) {
    this.store = new Conf<BudgetState>({
      cwd: stateDir,
      configName: "cloud-budget",
      schema: { month: { type: "string" }, used: { type: "integer", minimum: 0 } },
      defaults: { month: monthOf(this.now()), used: 0 },
      // A hand-edited or torn file must not stop the agent: start the month's count from the file's absence.
      clearInvalidConfig: true,
    });
  }

  get used(): number {
    return this.store.get("month") === monthOf(this.now()) ? this.store.get("used") : 0;
  }

  get remaining(): number {
    return Math.max(0, this.limit - this.used);
  }

  /** Gives back a call that provably never reached the service (the connection was refused). */
  refund(): void {
    if (this.used > 0) this.store.set({ month: monthOf(this.now()), used: this.used - 1 });
  }

  /** Takes one call from the budget; false (and nothing taken) when none is left. */
  tryReserve(): boolean {
    const month = monthOf(this.now());
    const used = this.used;
    if (used >= this.limit) return false;
    this.store.set({ month, used: used + 1 });
    return true;
  }
}
