/**
 * C sources compiled on first use with the machine's compiler and cached under a key of their
 * text and whatever else the build depends on (flags, CPU, the MPI installation); later processes
 * only open the cached library. Shared by the CPU backend's kernels and the MPI shim.
 */
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { readEnv } from "./env.ts";
import { runSync, tailLines } from "./process.ts";
import { arch, pid } from "./runtime.ts";

/** SPARSECODER_CACHE_DIR, else $XDG_CACHE_HOME/sparsecoder, else ~/.cache/sparsecoder. */
export function defaultCacheDir(): string {
  const set = readEnv("SPARSECODER_CACHE_DIR");
  if (set) return set;
  const xdg = readEnv("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "sparsecoder");
  try {
    return join(homedir(), ".cache", "sparsecoder");
  } catch {
    return join(tmpdir(), "sparsecoder-cache");
  }
}

/** What code compiled with -march=native depends on besides its source: this CPU. */
export function cpuKey(): string {
  try {
    const info = readFileSync("/proc/cpuinfo", "utf8");
    return [/^model name.*$/m, /^flags.*$/m].map((re) => info.match(re)?.[0] ?? "").join("\n");
  } catch {
    return arch();
  }
}

export interface CompileSpec {
  /** The C file. */
  src: string;
  /** More C files compiled with it, and headers they include: all part of the key. */
  more?: readonly string[];
  /** The compiler command (`cc`, `mpicc`, …). */
  cc: string;
  /** Flags before `-o`; part of the key. */
  flags: readonly string[];
  /** Arguments after the source (libraries), e.g. ["-lm"]. */
  libs: readonly string[];
  /** Anything else the result depends on (joined into the key after the flags). */
  keyParts: readonly string[];
  /** The library's name before its key: `<prefix>-<key>.so`. */
  prefix: string;
  dir: string;
}

/** The cached library for `spec`, compiled now if missing; throws with the compiler's message. */
export function compileCached(spec: CompileSpec): { path: string; compiled: boolean } {
  const more = spec.more ?? [];
  const h = createHash("sha256");
  for (const f of [spec.src, ...more]) h.update(readFileSync(f, "utf8"));
  h.update(spec.flags.join(" "));
  for (const p of spec.keyParts) h.update(p);
  const path = join(spec.dir, `${spec.prefix}-${h.digest("hex").slice(0, 16)}.so`);
  if (existsSync(path)) return { path, compiled: false };
  mkdirSync(spec.dir, { recursive: true });
  // Compile to a private name, then rename: a concurrent process never opens a half-written file.
  const tmp = `${path}.${pid()}.${Math.random().toString(36).slice(2)}.tmp`;
  const sources = [spec.src, ...more.filter((f) => f.endsWith(".c"))];
  const r = runSync(spec.cc, [...spec.flags, "-o", tmp, ...sources, ...spec.libs]);
  if (r.error !== null || r.status !== 0) {
    rmSync(tmp, { force: true });
    const why = r.error ?? tailLines(r.stderr);
    throw new Error(`${spec.cc} could not compile ${spec.src}: ${why}`);
  }
  renameSync(tmp, path);
  return { path, compiled: true };
}
