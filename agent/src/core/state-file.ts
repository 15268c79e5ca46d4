import { renameSync } from "node:fs";
import { rename } from "node:fs/promises";

/*
 * A state file the agent cannot use (torn by a power cut, edited by hand) is moved out of the
 * way and kept beside the original for a person to look at, so the start goes on clean
 * instead of failing or silently forgetting. Both return the name it was kept under.
 */

const corruptName = (file: string): string => `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, "-")}`;

export async function setAsideCorrupt(file: string): Promise<string> {
  const kept = corruptName(file);
  await rename(file, kept);
  return kept;
}

/** For state read once while a part is built, before anything else runs. */
export function setAsideCorruptSync(file: string): string {
  const kept = corruptName(file);
  renameSync(file, kept);
  return kept;
}
