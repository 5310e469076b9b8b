/**
 * Pre-tokenised ids in a NumPy `.npy` file of integers (int32 as written by most tools; other
 * integer widths are accepted and range-checked): [N, T] gives N documents of T ids (row n is
 * document n), a 1-D array is one document, yielded in pieces marked `continues` so memory stays
 * bounded. Data is read in fixed-size pieces, never the whole file.
 */
import { open } from "node:fs/promises";
import { type NpyHeader, parseNpyHeader } from "../npy.ts";
import type { CorpusDocument } from "./corpus.ts";
import { CorpusError } from "./corpus_error.ts";

const INTEGER_CODES = new Set(["i1", "i2", "i4", "i8", "u1", "u2", "u4"]);

async function readExactly(
  handle: Awaited<ReturnType<typeof open>>,
  n: number,
  at: number,
): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const { bytesRead } = await handle.read(buf, got, n - got, at + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === n ? buf : buf.subarray(0, got);
}

/** Elements [0, count) of raw little/big-endian integers as ids, or an error naming the first bad one. */
function toIds(
  raw: Uint8Array,
  h: NpyHeader,
  firstElement: number,
  fail: (element: number, value: bigint | number) => Error,
): Int32Array {
  const count = raw.length / h.itemsize;
  const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const le = !h.bigEndian;
  const out = new Int32Array(count);
  for (let i = 0; i < count; i++) {
    const o = i * h.itemsize;
    let v: number;
    switch (h.code) {
      case "i4":
        v = dv.getInt32(o, le);
        break;
      case "u2":
        v = dv.getUint16(o, le);
        break;
      case "i2":
        v = dv.getInt16(o, le);
        break;
      case "u1":
        v = raw[o];
        break;
      case "i1":
        v = dv.getInt8(o);
        break;
      case "u4":
        v = dv.getUint32(o, le);
        break;
      default: {
        const b = dv.getBigInt64(o, le);
        if (b < 0n || b > 0x7fffffffn) throw fail(firstElement + i, b);
        v = Number(b);
      }
    }
    if (v < 0 || v > 0x7fffffff) throw fail(firstElement + i, v);
    out[i] = v;
  }
  return out;
}

export async function* npyDocuments(
  file: string,
  chunkBytes: number,
): AsyncGenerator<CorpusDocument> {
  const handle = await open(file, "r");
  try {
    const { size } = await handle.stat();
    const prefix = await readExactly(handle, 12, 0);
    // Versions 2 and 3 carry a 4-byte header length at byte 8, version 1 a 2-byte one.
    const dv = new DataView(prefix.buffer, prefix.byteOffset, prefix.byteLength);
    const hlen = prefix.length < 12
      ? 0
      : prefix[6] === 1
      ? dv.getUint16(8, true) + 10
      : dv.getUint32(8, true) + 12;
    let h: NpyHeader;
    try {
      h = parseNpyHeader(await readExactly(handle, Math.min(hlen, size, (1 << 20) + 12), 0), file);
    } catch (e) {
      throw new CorpusError(file, null, (e as Error).message.replace(`${file}: `, ""));
    }
    if (!INTEGER_CODES.has(h.code)) {
      throw new CorpusError(
        file,
        null,
        `dtype '${h.descr}' is not integer; pre-tokenised ids must be int32 (or another integer type)`,
      );
    }
    if (h.shape.length !== 1 && h.shape.length !== 2) {
      throw new CorpusError(
        file,
        null,
        `shape (${h.shape.join(", ")}) is not [N, T] rows or a 1-D stream of ids`,
      );
    }
    if (h.fortranOrder && h.shape.length === 2 && h.shape[0] > 1 && h.shape[1] > 1) {
      throw new CorpusError(
        file,
        null,
        "Fortran-ordered [N, T] ids cannot be read row by row; save with np.ascontiguousarray",
      );
    }
    const total = h.shape.reduce((a, b) => a * b, 1);
    const need = h.dataStart + total * h.itemsize;
    if (size !== need) {
      throw new CorpusError(
        file,
        null,
        `file is ${size} bytes but shape (${h.shape.join(", ")}) '${h.descr}' needs ${need}`,
      );
    }
    const bad = (row: (e: number) => string) => (e: number, v: bigint | number) =>
      new CorpusError(file, row(e), `${v} is not a token id (an integer from 0 to 2^31-1)`);
    if (h.shape.length === 2) {
      const [n, t] = h.shape;
      const rowBytes = t * h.itemsize;
      const perRead = Math.max(1, Math.floor(chunkBytes / Math.max(rowBytes, 1)));
      for (let r = 0; r < n; r += perRead) {
        const m = Math.min(perRead, n - r);
        const raw = await readExactly(handle, m * rowBytes, h.dataStart + r * rowBytes);
        const ids = toIds(
          raw,
          h,
          r * t,
          bad((e) => `row ${Math.floor(e / t)}, column ${e % t}`),
        );
        for (let k = 0; k < m; k++) {
          yield { ids: ids.subarray(k * t, (k + 1) * t), file, line: r + k };
        }
      }
    } else {
      const perRead = Math.max(1, Math.floor(chunkBytes / h.itemsize));
      for (let i = 0; i < total; i += perRead) {
        const m = Math.min(perRead, total - i);
        const raw = await readExactly(handle, m * h.itemsize, h.dataStart + i * h.itemsize);
        const ids = toIds(raw, h, i, bad((e) => `element ${e}`));
        yield { ids, file, line: i, ...(i > 0 ? { continues: true } : {}) };
      }
      if (total === 0) yield { ids: new Int32Array(0), file, line: 0 };
    }
  } finally {
    await handle.close();
  }
}
