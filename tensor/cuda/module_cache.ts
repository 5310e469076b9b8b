/**
 * Compiled kernel images kept on disk between processes, keyed by a hash of the source, the target
 * and the NVRTC version, so only the first process on a machine pays for compilation (a test
 * suite runs many). Folder: $SPARSECODER_CUDA_CACHE, else ~/.cache/sparsecoder/cuda; "0"
 * turns it off. Entries are written to a temporary name and renamed (atomic); a missing,
 * unreadable or unwritable cache only costs a compile.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

/** FNV-1a, 64-bit, over UTF-16 code units: a cache key, not a security boundary. */
export function hash64(text: string): string {
  let h = 0xcbf29ce484222325n;
  for (let i = 0; i < text.length; i++) {
    h = ((h ^ BigInt(text.charCodeAt(i))) * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return h.toString(16).padStart(16, "0");
}

export function cacheDir(env: (n: string) => string | undefined): string | null {
  const v = env("SPARSECODER_CUDA_CACHE");
  if (v === "0") return null;
  if (v) return v;
  try {
    return join(homedir(), ".cache", "sparsecoder", "cuda");
  } catch {
    return null;
  }
}

export function cacheGet(dir: string | null, key: string): Uint8Array | null {
  if (!dir) return null;
  try {
    return new Uint8Array(readFileSync(join(dir, key)));
  } catch {
    return null;
  }
}

export function cachePut(dir: string | null, key: string, image: Uint8Array): void {
  if (!dir) return;
  try {
    mkdirSync(dir, { recursive: true });
    const tmp = join(dir, `${key}.${Math.random().toString(36).slice(2)}.tmp`);
    writeFileSync(tmp, image);
    renameSync(tmp, join(dir, key));
  } catch {
    // A read-only or full disk only means compiling again next time.
  }
}
