/** Process and file helpers for the CUDA tests, through node: built-ins (Deno and Bun both have them). */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run a program to completion; code 127 when it cannot be started. */
export function run(cmd: string, args: string[], cwd?: string): Ran {
  const p = spawnSync(cmd, args, { cwd, encoding: "utf8", maxBuffer: 64 << 20 });
  if (p.error) return { code: 127, stdout: "", stderr: String(p.error) };
  return { code: p.status ?? 1, stdout: p.stdout ?? "", stderr: p.stderr ?? "" };
}

/** Run a program without blocking, so several can run side by side. */
export function runAsync(cmd: string, args: string[]): Promise<Ran> {
  return new Promise((resolve) => {
    const p = spawn(cmd, args);
    let stdout = "", stderr = "";
    p.stdout.on("data", (d) => (stdout += d));
    p.stderr.on("data", (d) => (stderr += d));
    p.on("error", (e) => resolve({ code: 127, stdout, stderr: stderr + String(e) }));
    p.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** The path of a program on PATH, or null. */
export function which(name: string): string | null {
  const r = run("sh", ["-c", `command -v ${name}`]);
  return r.code === 0 && r.stdout.trim() ? r.stdout.trim() : null;
}

export const writeText = (path: string, text: string): void => writeFileSync(path, text);
export const tempDir = (): string => mkdtempSync(join(tmpdir(), "sc-cuda-"));
export const removeDir = (path: string): void => rmSync(path, { recursive: true, force: true });
export { join };

/** Print why a check was skipped (so a skip is never silent). */
export function skip(name: string, why: string): void {
  console.log(`SKIPPED ${name}: ${why}`);
}
