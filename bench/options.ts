/** A whole-number command-line option, refused with its name and bound when it is anything else. */
export function wholeNumber(name: string, value: string | undefined, min: number): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number of at least ${min} (got ${value})`);
  return n;
}
