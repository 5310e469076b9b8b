/**
 * Crash-safe file writes: a reader sees either the old file or the complete new one, never a
 * partial write. node:fs/promises is used because it behaves the same under Deno and Bun.
 */
import { mkdir, open, readFile, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

function tempName(path: string): string {
  const rnd = new Uint8Array(6);
  crypto.getRandomValues(rnd);
  const hex = Array.from(rnd, (b) => b.toString(16).padStart(2, "0")).join("");
  // Same directory as the target, so the final rename never crosses a filesystem.
  return join(dirname(path), `.${basename(path)}.${hex}.tmp`);
}

/** Write `bytes` (or UTF-8 text) to `path` atomically: temp file, fsync, rename, fsync the directory. */
export async function writeFileAtomic(path: string, bytes: Uint8Array | string): Promise<void> {
  const data = typeof bytes === "string" ? new TextEncoder().encode(bytes) : bytes;
  const tmp = tempName(path);
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(tmp, "wx"); // exclusive: never clobber someone else's temp file
    let done = 0;
    while (done < data.byteLength) {
      const { bytesWritten } = await fh.write(data, done, data.byteLength - done);
      done += bytesWritten;
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (e) {
    if (fh) await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw new Error(`writeFileAtomic: cannot write ${path}: ${(e as Error).message}`, { cause: e });
  }
  await syncDir(dirname(path));
}

/** Persist the rename itself; not every platform lets a directory be opened, so failures are ignored. */
async function syncDir(dir: string): Promise<void> {
  let dh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    dh = await open(dir, "r");
    await dh.sync();
  } catch {
    // best effort (e.g. Windows, or filesystems without directory fsync)
  } finally {
    await dh?.close().catch(() => {});
  }
}

/** JSON.stringify's replacer for numeric records: typed arrays become plain arrays, not {"0": …}. */
export function typedArraysAsLists(_key: string, v: unknown): unknown {
  return ArrayBuffer.isView(v) && !(v instanceof DataView)
    ? Array.from(
      v as unknown as ArrayLike<number | bigint>,
      (x) => typeof x === "bigint" ? Number(x) : x,
    )
    : v;
}

/** `JSON.stringify(value, typedArraysAsLists, 2)` plus a newline, written atomically. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const text = JSON.stringify(value, typedArraysAsLists, 2);
  if (text === undefined) {
    throw new TypeError(`writeJsonAtomic: ${path}: value is not JSON-serialisable`);
  }
  await writeFileAtomic(path, text + "\n");
}

/** Create a directory and its parents; an existing directory is fine. */
export async function ensureDir(path: string): Promise<void> {
  await mkdir(path, { recursive: true });
}

/** The whole file as bytes; the error names the path. */
export async function readFileBytes(path: string): Promise<Uint8Array> {
  let buf: Uint8Array;
  try {
    buf = await readFile(path);
  } catch (e) {
    throw new Error(`readFileBytes: cannot read ${path}: ${(e as Error).message}`, { cause: e });
  }
  // A plain Uint8Array over the same memory (no copy), so callers never depend on Buffer.
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
