/**
 * The naming rule at the file boundary: what we write (cfg.json, eval.json, metrics.jsonl) uses
 * snake_case keys, as cfg.json does after SAELens; records in memory are camelCase. Records that
 * are the file's own (SaeConfig, EvalMetrics) already carry its names; others pass through here.
 */

/** deadFraction → dead_fraction; snake_case names are left as they are. */
export const snakeCase = (key: string): string =>
  key.replace(/[A-Z]/g, (c) => "_" + c.toLowerCase());

/** The record with its own keys in snake_case, in the same order (values are not visited). */
export function snakeKeys(r: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(r).map(([k, v]) => [snakeCase(k), v]));
}
