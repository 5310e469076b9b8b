/**
 * Subprocesses, the same under every runtime (node:child_process, which Deno and Bun both
 * provide): run a program to completion and get its status and output.
 */
import { spawnSync } from "node:child_process";
import { execPath, runtime } from "./runtime.ts";

export interface RunResult {
  /** Exit status; null when the program could not start or was killed. */
  status: number | null;
  stdout: string;
  stderr: string;
  /** Why it could not start (e.g. "spawnSync cc ENOENT"), else null. */
  error: string | null;
}

/** Run `cmd` with `args` and wait for it; never throws. */
export function runSync(
  cmd: string,
  args: readonly string[],
  o: { cwd?: string; env?: Record<string, string>; timeoutMs?: number } = {},
): RunResult {
  try {
    const r = spawnSync(cmd, [...args], {
      encoding: "utf8",
      cwd: o.cwd,
      env: o.env,
      timeout: o.timeoutMs,
    });
    return {
      status: r.status,
      stdout: r.stdout ?? "",
      stderr: r.stderr ?? "",
      error: r.error ? r.error.message : null,
    };
  } catch (e) {
    return { status: null, stdout: "", stderr: "", error: (e as Error).message };
  }
}

/** The last `lines` lines of a program's error output, joined by " | " (for one-line reasons). */
export function tailLines(text: string, lines = 3): string {
  return text.trim().split("\n").slice(-lines).join(" | ");
}

/**
 * The command line that runs a script file under this runtime, as the project runs its own
 * (Deno with every permission and without the Maglev tier): `[program, ...arguments]`.
 */
export function scriptCommand(script: string): string[] {
  return runtime === "deno"
    ? [execPath(), "run", "-A", "--v8-flags=--no-maglev", script]
    : [execPath(), script];
}
