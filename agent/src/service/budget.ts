import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import Conf from "conf";
import { setAsideCorruptSync } from "../core/state-file.ts";
import { jsonSyntaxProblem } from "../core/json.ts";

interface BudgetState {
  month: string;
  used: number;
}

const CONFIG_NAME = "cloud-budget";

/**
 * A hand-edited or torn budget file must not stop the agent, nor vanish unnoticed: it is set
 * aside (core/state-file.ts) and the month's count starts clean.
 */
function setAsideIfCorrupt(file: string, warn: (message: string) => void): void {
  if (!existsSync(file)) return;
  let problem: string;
  try {
    const state = JSON.parse(readFileSync(file, "utf8")) as Partial<BudgetState> | null;
    if (state && typeof state.month === "string" && Number.isInteger(state.used) && state.used! >= 0) return;
    problem = 'it lacks a "month" string or a whole "used" count';
  } catch (err) {
    problem = `it is ${jsonSyntaxProblem(err)}`;
  }
  const kept = setAsideCorruptSync(file);
  warn(`cloud budget: ${file} cannot be used: ${problem}; kept as ${kept}, this month's count starts from 0`);
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
    warn: (message: string) => void = () => {},
  ) {
    setAsideIfCorrupt(join(stateDir, `${CONFIG_NAME}.json`), warn);
    this.store = new Conf<BudgetState>({
      cwd: stateDir,
      configName: CONFIG_NAME,
      schema: { month: { type: "string" }, used: { type: "integer", minimum: 0 } },
      defaults: { month: monthOf(this.now()), used: 0 },
      // Checked above already; this only covers a file changed between that check and this read.
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
