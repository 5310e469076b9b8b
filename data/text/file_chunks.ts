/**
 * Reading a file as a stream of fixed-size chunks, and as lines of bytes, with bounded memory.
 * Zstandard files (recognised by their magic bytes, whatever the extension) are decompressed on
 * the fly. Lines are cut at the byte 0x0A, which never occurs inside a multi-byte UTF-8 sequence,
 * so a character split across two chunks is whole again in its line before it is decoded.
 */
import { open } from "node:fs/promises";
import { Decompress } from "fzstd";

/** Default read size: large enough to amortise the system call, small next to any memory limit. */
export const DEFAULT_CHUNK_BYTES = 1 << 20;

const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];

/** Raw chunks of at most `chunkBytes` bytes from a file, read from `start` (no decompression). */
export async function* rawChunks(
  path: string,
  chunkBytes = DEFAULT_CHUNK_BYTES,
  start = 0,
): AsyncGenerator<Uint8Array> {
  const handle = await open(path, "r");
  try {
    let pos = start;
    for (;;) {
      // A fresh buffer per read: consumers may keep a chunk (the last partial line) past the next.
      const buf = new Uint8Array(chunkBytes);
      const { bytesRead } = await handle.read(buf, 0, chunkBytes, pos);
      if (bytesRead === 0) return;
      pos += bytesRead;
      yield bytesRead === chunkBytes ? buf : buf.subarray(0, bytesRead);
    }
  } finally {
    await handle.close();
  }
}

function isZstd(chunk: Uint8Array): boolean {
  return ZSTD_MAGIC.every((b, i) => chunk[i] === b);
}

/**
 * The file's content as chunks: the raw bytes, or for a Zstandard file the decompressed bytes
 * (each compressed chunk decompresses to what the frame holds; sizes vary, memory stays bounded
 * by the frame window). `onError` turns a decompression failure into the caller's error type.
 */
export async function* contentChunks(
  path: string,
  chunkBytes: number,
  onError: (message: string) => Error,
): AsyncGenerator<Uint8Array> {
  let zstd: Decompress | null = null;
  const out: Uint8Array[] = [];
  // The first chunks are held until the 4 magic bytes are in (reads may be smaller than that).
  let head: Uint8Array | null = new Uint8Array(0);
  let consumed = 0;
  for await (const raw of rawChunks(path, chunkBytes)) {
    let chunk = raw;
    if (head !== null) {
      const joined: Uint8Array = new Uint8Array(head.length + raw.length);
      joined.set(head);
      joined.set(raw, head.length);
      if (joined.length < ZSTD_MAGIC.length) {
        head = joined;
        continue;
      }
      head = null;
      chunk = joined;
      if (isZstd(chunk)) zstd = new Decompress((data) => void out.push(data));
    }
    if (zstd === null) {
      yield chunk;
      continue;
    }
    try {
      zstd.push(chunk);
    } catch (e) {
      throw onError(
        `zstd decompression failed in compressed bytes ${consumed}..${consumed + chunk.length}: ${
          (e as Error).message
        }`,
      );
    }
    consumed += chunk.length;
    while (out.length > 0) yield out.shift()!;
  }
  if (head !== null && head.length > 0) yield head; // a file shorter than the magic
  if (zstd !== null) {
    try {
      zstd.push(new Uint8Array(0), true);
    } catch (e) {
      throw onError(`zstd stream ends early (truncated file?): ${(e as Error).message}`);
    }
    while (out.length > 0) yield out.shift()!;
  }
}

/** Whole lines from one stretch of the input: `bytes` holds them, each ended by "\n" except perhaps the file's last. */
export interface LineBlock {
  bytes: Uint8Array;
  /** Byte length of each line (its "\n" not counted). */
  lineBytes: number[];
  /** 1-based number of the block's first line. */
  firstLine: number;
}

/**
 * Blocks of whole lines from a stream of chunks: each chunk's complete lines in one block (the
 * partial line at its end carried into the next), so callers decode and split a block at once
 * instead of paying per line. A line longer than `maxLineBytes` is refused through
 * `tooLong(lineNumber)` rather than grown without bound. The last line is included even without
 * a final newline; a file ending in "\n" has no empty line after it.
 */
export async function* lineBlocks(
  chunks: AsyncIterable<Uint8Array>,
  maxLineBytes: number,
  tooLong: (line: number) => Error,
): AsyncGenerator<LineBlock> {
  let carry: Uint8Array[] = [];
  let carryBytes = 0;
  let line = 1;
  for await (const chunk of chunks) {
    const lineBytes: number[] = [];
    let start = 0, prev = -1;
    for (;;) {
      const nl = chunk.indexOf(0x0a, prev + 1);
      if (nl < 0) break;
      const n = nl - prev - 1 + (lineBytes.length === 0 ? carryBytes : 0);
      if (n > maxLineBytes) throw tooLong(line + lineBytes.length);
      lineBytes.push(n);
      prev = nl;
    }
    if (lineBytes.length > 0) {
      const end = prev + 1;
      const bytes = carryBytes === 0
        ? chunk.subarray(start, end)
        : concat([...carry, chunk.subarray(0, end)], carryBytes + end);
      yield { bytes, lineBytes, firstLine: line };
      line += lineBytes.length;
      carry = [];
      carryBytes = 0;
      start = end;
    }
    if (start < chunk.length) {
      carryBytes += chunk.length - start;
      if (carryBytes > maxLineBytes) throw tooLong(line);
      carry.push(chunk.subarray(start));
    }
  }
  if (carryBytes > 0) {
    yield { bytes: concat(carry, carryBytes), lineBytes: [carryBytes], firstLine: line };
  }
}

function concat(parts: Uint8Array[], total: number): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

const UTF8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Decode UTF-8 strictly; on invalid input, the byte offset of the first bad sequence instead. */
export function decodeUtf8(bytes: Uint8Array): { text: string } | { badByte: number } {
  try {
    return { text: UTF8.decode(bytes) };
  } catch {
    return { badByte: firstInvalidUtf8(bytes) };
  }
}

/** The offset of the first byte that does not start or continue a valid UTF-8 sequence. */
export function firstInvalidUtf8(b: Uint8Array): number {
  let i = 0;
  while (i < b.length) {
    const c = b[i];
    let n: number, min: number;
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) [n, min] = [1, 0x80];
    else if (c >= 0xe0 && c <= 0xef) [n, min] = [2, 0x800];
    else if (c >= 0xf0 && c <= 0xf4) [n, min] = [3, 0x10000];
    else return i;
    if (i + n >= b.length) return i; // the sequence is cut off by the end
    let cp = c & (0x3f >> n);
    for (let k = 1; k <= n; k++) {
      const cc = b[i + k];
      if ((cc & 0xc0) !== 0x80) return i;
      cp = (cp << 6) | (cc & 0x3f);
    }
    // Overlong forms, UTF-16 surrogates and code points past U+10FFFF are invalid too.
    if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return i;
    i += n + 1;
  }
  return b.length;
}
