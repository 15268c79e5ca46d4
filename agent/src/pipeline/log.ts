/** Lines on stderr as `sam-edge: [level] message`; stdout stays free for results (--print). */
export type LogLevel = "debug" | "info" | "warn" | "error";

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export function createLogger(level: LogLevel, write: (line: string) => void = (line) => process.stderr.write(line + "\n")): Logger {
  const at = (l: LogLevel) => (message: string) => {
    if (ORDER[l] >= ORDER[level]) write(`sam-edge: ${l === "info" ? "" : `[${l}] `}${message}`);
  };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
