/** The middle value (the upper one of an even count), as the bench scripts report p50s. */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1]!;
}
