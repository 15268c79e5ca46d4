import { pino, type Logger as PinoLogger } from "pino";

/**
 * The agent's one logger, shared by every part and by fastify (so a 500 answer's "the agent's
 * log has the details" is true): pino, writing lines as `sam-edge: [level] message` on stderr
 * (stdout stays free for results with --print), an error's stack after its message.
 */
export type LogLevel = "debug" | "info" | "warn" | "error";

export type Logger = PinoLogger;

const LEVELS: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };

interface Record_ {
  level: number;
  msg?: string;
  err?: { message?: string; stack?: string; code?: string };
}

function line(record: Record_): string {
  const level = LEVELS[record.level] ?? "info";
  const err = record.err ? `: ${record.err.code ? `${record.err.code}: ` : ""}${record.err.stack ?? record.err.message ?? ""}` : "";
  return `sam-edge: ${level === "info" ? "" : `[${level}] `}${record.msg ?? ""}${err}`;
}

export function createLogger(level: LogLevel, write: (line: string) => void = (l) => process.stderr.write(l + "\n")): Logger {
  return pino(
    { level, base: undefined, timestamp: false },
    // Synchronous: a line is out before the next statement runs, and before an exit.
    { write: (chunk: string) => write(line(JSON.parse(chunk) as Record_)) },
  );
}
