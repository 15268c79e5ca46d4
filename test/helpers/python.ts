import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";

export const REPO_ROOT = fileURLToPath(new URL("../../", import.meta.url));

export interface ScriptResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `python3 SCRIPT ARGS...` from the repository root. A non-zero exit is a result to assert on, not an exception. */
export function runPython(script: string, args: string[]): Promise<ScriptResult> {
  return new Promise((resolve, reject) => {
    execFile("python3", [script, ...args], { cwd: REPO_ROOT, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== "number") {
        reject(err);
        return;
      }
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}
