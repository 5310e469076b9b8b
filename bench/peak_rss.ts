/** The process's peak resident memory, for the benches that report it. */
import { readFileSync } from "node:fs";
import process from "node:process";

/** Peak resident set size in MiB (Linux VmHWM; elsewhere the current RSS). */
export function peakRssMiB(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) return Number(m[1]) / 1024;
  } catch { /* not Linux */ }
  return process.memoryUsage().rss / (1 << 20);
}
