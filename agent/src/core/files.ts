import { realpath } from "node:fs/promises";
import { join, relative, isAbsolute } from "node:path";

/**
 * Where `name` in `dir` really is, when that is inside `dir`; undefined when a symbolic link
 * (of the file or of a folder on its way) leads out of it. A folder handed to the agent (a
 * model set, a folder camera) may hold links among its own files, never to /etc/passwd.
 * Rejects like realpath when the file does not exist.
 */
export async function realPathInside(dir: string, name: string): Promise<string | undefined> {
  const [root, real] = await Promise.all([realpath(dir), realpath(join(dir, name))]);
  const rel = relative(root, real);
  return rel !== "" && !rel.startsWith("..") && !isAbsolute(rel) ? real : undefined;
}
