/**
 * A structural verifier for Arrow IPC message metadata (flatbuffers), run before apache-arrow
 * decodes it. The JS flatbuffers runtime trusts every offset and vector length, so a corrupt
 * length of 2^31 makes the decoder build billions of objects; here every table, vtable, vector
 * and string of the Message / Schema / Field / RecordBatch / DictionaryBatch tables is checked to
 * lie inside the buffer, nesting is bounded, and a record batch's nodes and buffers are checked
 * against the body length. Layouts follow Message.fbs and Schema.fbs of the Arrow format.
 */

export class FlatbufferError extends Error {
  override name = "FlatbufferError";
}

const MAX_DEPTH = 64;
const MAX_TABLES = 1 << 16;

class Verifier {
  readonly dv: DataView;
  tables = 0;
  constructor(readonly b: Uint8Array) {
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  }
  fail(msg: string, at: number): never {
    throw new FlatbufferError(`${msg} (metadata byte ${at})`);
  }
  within(at: number, n: number, what: string): void {
    if (at < 0 || n < 0 || at + n > this.b.length) {
      this.fail(`${what} [${at}, ${at + n}) lies outside the ${this.b.length}-byte metadata`, at);
    }
  }
  /** Validate the table at `t`; returns a reader of its fields' positions (0 when absent). */
  table(t: number, what: string): (field: number, size: number) => number {
    if (++this.tables > MAX_TABLES) this.fail(`more than ${MAX_TABLES} tables`, t);
    this.within(t, 4, what);
    const vt = t - this.dv.getInt32(t, true);
    this.within(vt, 4, `${what} vtable`);
    const vsize = this.dv.getUint16(vt, true), tsize = this.dv.getUint16(vt + 2, true);
    if (vsize < 4 || vsize % 2) this.fail(`${what} vtable size ${vsize} is invalid`, vt);
    this.within(vt, vsize, `${what} vtable`);
    this.within(t, tsize, what);
    return (field, size) => {
      const at = vt + 4 + 2 * field;
      if (at + 2 > vt + vsize) return 0;
      const off = this.dv.getUint16(at, true);
      if (off === 0) return 0;
      if (off + size > tsize) {
        this.fail(
          `${what} field ${field} at offset ${off} runs past the table's ${tsize} bytes`,
          t,
        );
      }
      return t + off;
    };
  }
  /** Follow the uoffset stored at `at` (0 = absent field). */
  deref(at: number, what: string): number {
    if (at === 0) return 0;
    this.within(at, 4, what);
    const target = at + this.dv.getUint32(at, true);
    this.within(target, 4, what);
    return target;
  }
  /** A vector of `elem`-byte elements; returns [start, length]. */
  vector(at: number, elem: number, what: string): [number, number] {
    const v = this.deref(at, what);
    if (v === 0) return [0, 0];
    const n = this.dv.getUint32(v, true);
    if (n * elem > this.b.length) {
      this.fail(`${what} claims ${n} elements, more than the metadata can hold`, v);
    }
    this.within(v + 4, n * elem, what);
    return [v + 4, n];
  }
  string(at: number, what: string): void {
    const [s, n] = this.vector(at, 1, what);
    if (s) this.within(s, n + 1, what); // the terminating NUL
  }
  tables_(at: number, what: string, each: (t: number, i: number) => void): void {
    const [s, n] = this.vector(at, 4, what);
    for (let i = 0; i < n; i++) each(this.deref(s + 4 * i, `${what}[${i}]`), i);
  }
}

function keyValues(v: Verifier, at: number, what: string): void {
  v.tables_(at, what, (t, i) => {
    const f = v.table(t, `${what}[${i}]`);
    v.string(f(0, 4), `${what}[${i}].key`);
    v.string(f(1, 4), `${what}[${i}].value`);
  });
}

function field(v: Verifier, t: number, path: string, depth: number): void {
  if (depth > MAX_DEPTH) v.fail(`fields nested deeper than ${MAX_DEPTH}`, t);
  const f = v.table(t, path);
  v.string(f(0, 4), `${path}.name`);
  const typeAt = f(3, 4);
  if (typeAt) {
    const tt = v.deref(typeAt, `${path}.type`);
    const ty = v.table(tt, `${path}.type`);
    const typeType = f(2, 1) ? v.b[f(2, 1)] : 0;
    if (typeType === 14) v.vector(ty(1, 4), 4, `${path}.type.typeIds`); // Union
  }
  const dict = v.deref(f(4, 4), `${path}.dictionary`);
  if (dict) {
    const d = v.table(dict, `${path}.dictionary`);
    const it = v.deref(d(1, 4), `${path}.dictionary.indexType`);
    if (it) v.table(it, `${path}.dictionary.indexType`);
  }
  v.tables_(
    f(5, 4),
    `${path}.children`,
    (c, i) => field(v, c, `${path}.children[${i}]`, depth + 1),
  );
  keyValues(v, f(6, 4), `${path}.custom_metadata`);
}

function recordBatch(v: Verifier, t: number, bodyLength: number, what: string): void {
  const r = v.table(t, what);
  // Nothing in a batch can have more elements than its body has bits (bar null-type columns).
  const maxLen = BigInt(bodyLength) * 8n + 64n;
  const lenAt = r(0, 8);
  if (lenAt && v.dv.getBigInt64(lenAt, true) > maxLen) {
    v.fail(
      `${what}.length ${
        v.dv.getBigInt64(lenAt, true)
      } exceeds what a ${bodyLength}-byte body can hold`,
      lenAt,
    );
  }
  const [ns, nn] = v.vector(r(1, 4), 16, `${what}.nodes`);
  for (let i = 0; i < nn; i++) {
    const len = v.dv.getBigInt64(ns + 16 * i, true),
      nulls = v.dv.getBigInt64(ns + 16 * i + 8, true);
    if (len < 0n || len > maxLen || nulls < 0n || nulls > len) {
      v.fail(
        `${what}.nodes[${i}] length ${len} / null count ${nulls} is impossible for a ${bodyLength}-byte body`,
        ns + 16 * i,
      );
    }
  }
  const [bs, bn] = v.vector(r(2, 4), 16, `${what}.buffers`);
  for (let i = 0; i < bn; i++) {
    const off = v.dv.getBigInt64(bs + 16 * i, true), len = v.dv.getBigInt64(bs + 16 * i + 8, true);
    if (off < 0n || len < 0n || off + len > BigInt(bodyLength)) {
      v.fail(
        `${what}.buffers[${i}] [${off}, ${off + len}) lies outside the ${bodyLength}-byte body`,
        bs + 16 * i,
      );
    }
  }
  const comp = v.deref(r(3, 4), `${what}.compression`);
  if (comp) v.table(comp, `${what}.compression`);
  v.vector(r(4, 4), 8, `${what}.variadicBufferCounts`);
}

/** Verify a Message flatbuffer; returns its header type and body length. */
export function verifyMessage(meta: Uint8Array): { headerType: number; bodyLength: number } {
  const v = new Verifier(meta);
  v.within(0, 4, "root offset");
  const root = v.dv.getUint32(0, true);
  const m = v.table(root, "Message");
  const htAt = m(1, 1);
  const headerType = htAt ? meta[htAt] : 0;
  const blAt = m(3, 8);
  const body = blAt ? v.dv.getBigInt64(blAt, true) : 0n;
  if (body < 0n || body > BigInt(Number.MAX_SAFE_INTEGER)) {
    v.fail(`Message.bodyLength ${body} is invalid`, blAt);
  }
  const bodyLength = Number(body);
  const h = v.deref(m(2, 4), "Message.header");
  if (headerType === 1 && h) {
    const s = v.table(h, "Schema");
    v.tables_(s(1, 4), "Schema.fields", (t, i) => field(v, t, `Schema.fields[${i}]`, 0));
    keyValues(v, s(2, 4), "Schema.custom_metadata");
    v.vector(s(3, 4), 8, "Schema.features");
  } else if (headerType === 3 && h) recordBatch(v, h, bodyLength, "RecordBatch");
  else if (headerType === 2 && h) {
    const d = v.table(h, "DictionaryBatch");
    const rb = v.deref(d(1, 4), "DictionaryBatch.data");
    if (rb) recordBatch(v, rb, bodyLength, "DictionaryBatch.data");
  } else if (h) v.table(h, "Message.header");
  keyValues(v, m(4, 4), "Message.custom_metadata");
  return { headerType, bodyLength };
}
