/**
 * Why text is not JSON, without any of the text: V8's own message quotes the start of it
 * ("Unexpected token 'r', "root:x:0:0:"... is not valid JSON"), and a file read on a client's
 * behalf (a symlink to /etc/passwd) must never reach the client through an error.
 */
export function jsonSyntaxProblem(err: unknown): string {
  const message = err instanceof Error ? err.message : "";
  const where = /line (\d+) column (\d+)/.exec(message) ?? /position (\d+)/.exec(message);
  if (/Unexpected end of JSON input/.test(message)) return "not valid JSON (it ends too early)";
  if (!where) return "not valid JSON";
  return where.length === 3 ? `not valid JSON (at line ${where[1]} column ${where[2]})` : `not valid JSON (at character ${where[1]})`;
}
