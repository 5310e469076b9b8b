/**
 * A bounds check of an Arrow IPC stream before apache-arrow decodes it. apache-arrow trusts the
 * counts in a message's flatbuffer: one flipped byte in a schema's children count made
 * tableFromIPC allocate ~3 GB for a 456-byte body (found by the fuzzing test). This walks the
 * framing and the few flatbuffer tables that hold counts, and refuses a stream whose counts do not
 * fit in its bytes or exceed what the API's columns need. It only reads; it decodes nothing.
 *
 * Stream: messages of [0xFFFFFFFF][int32 metadata length][Message flatbuffer][body], ended by
 * [0xFFFFFFFF][0] or the end of the bytes. Tables (Arrow's Message.fbs / Schema.fbs):
 * Message{version, header_type, header, bodyLength}, Schema{endianness, fields},
 * Field{name, nullable, type_type, type, dictionary, children}, RecordBatch{length, nodes, buffers}.
 */
import { HttpError } from "./validate.ts";

const MAX_METADATA = 64 << 10;
const MAX_FIELDS = 16;
const MAX_CHILDREN = 2;
const MAX_DEPTH = 3;
// Int, FloatingPoint, List, FixedSizeList: everything the API's columns are made of.
const ALLOWED_TYPES = new Set([2, 3, 12, 16]);
const HEADER_SCHEMA = 1, HEADER_RECORD_BATCH = 3;

class Flat {
  readonly view: DataView;
  constructor(readonly bytes: Uint8Array) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  private need(pos: number, n: number, what: string): void {
    if (pos < 0 || pos + n > this.bytes.byteLength) {
      bad(`${what} lies outside the message (offset ${pos})`);
    }
  }
  u32(pos: number, what: string): number {
    this.need(pos, 4, what);
    return this.view.getUint32(pos, true);
  }
  /** Position of field `i` of the table at `t`, or 0 when absent. */
  field(t: number, i: number): number {
    const vt = t - this.view.getInt32(t, true);
    this.need(vt, 4, "vtable");
    const size = this.view.getUint16(vt, true);
    if (4 + 2 * i + 2 > size) return 0;
    this.need(vt + 4 + 2 * i, 2, "vtable entry");
    const o = this.view.getUint16(vt + 4 + 2 * i, true);
    if (o) this.need(t + o, 1, `field ${i}`);
    return o ? t + o : 0;
  }
  /** The table or vector an offset field points at. */
  deref(pos: number, what: string): number {
    const target = pos + this.u32(pos, what);
    this.need(target, 4, what);
    return target;
  }
  /** A vector's length, checked against the bytes it would need. */
  vector(
    pos: number,
    elemSize: number,
    what: string,
    max: number,
  ): { start: number; length: number } {
    const v = this.deref(pos, what);
    const length = this.u32(v, what);
    if (length > max) bad(`${what} has ${length} entries (at most ${max})`);
    this.need(v + 4, length * elemSize, what);
    return { start: v + 4, length };
  }
  u8(pos: number): number {
    this.need(pos, 1, "byte");
    return this.bytes[pos];
  }
  i64(pos: number, what: string): number {
    this.need(pos, 8, what);
    return Number(this.view.getBigInt64(pos, true));
  }
}

function bad(msg: string): never {
  throw new HttpError(400, "malformed_arrow", `Arrow stream rejected: ${msg}`);
}

/** Vectors apache-arrow walks element by element (custom metadata, features, buffers): their counts must fit the bytes. */
function checkVectors(
  f: Flat,
  t: number,
  fields: [index: number, elemSize: number, what: string][],
): void {
  for (const [i, size, what] of fields) {
    const p = f.field(t, i);
    if (p) f.vector(p, size, what, MAX_METADATA);
  }
}

function checkField(f: Flat, t: number, depth: number): void {
  checkVectors(f, t, [[6, 4, "field metadata"]]);
  const tt = f.field(t, 2);
  const typeId = tt ? f.u8(tt) : 0;
  if (!ALLOWED_TYPES.has(typeId)) {
    bad(`column type ${typeId} is not one of Int, FloatingPoint, List, FixedSizeList`);
  }
  if (f.field(t, 4)) bad("dictionary-encoded columns are not accepted");
  const c = f.field(t, 5);
  if (!c) return;
  if (depth >= MAX_DEPTH) bad("columns are nested too deeply");
  const { start, length } = f.vector(c, 4, "field children", MAX_CHILDREN);
  for (let i = 0; i < length; i++) checkField(f, f.deref(start + 4 * i, "child field"), depth + 1);
}

/** Throws a 400 HttpError unless the stream's framing and counts are sane; `maxRows` bounds batch lengths. */
export function checkArrowStream(bytes: Uint8Array, maxRows: number, maxValues: number): void {
  const all = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 0, messages = 0, totalRows = 0;
  while (pos + 8 <= bytes.byteLength) {
    let len = all.getUint32(pos, true);
    if (len === 0xffffffff) len = all.getUint32(pos += 4, true);
    pos += 4;
    if (len === 0) return; // end-of-stream marker
    if (len > MAX_METADATA || pos + len > bytes.byteLength) {
      bad(
        `message ${messages} declares ${len} metadata bytes, ${
          bytes.byteLength - pos
        } remain (at most ${MAX_METADATA})`,
      );
    }
    const f = new Flat(bytes.subarray(pos, pos + len));
    const msg = f.deref(0, "message");
    const ht = f.field(msg, 1), h = f.field(msg, 2), bl = f.field(msg, 3);
    const header = ht ? f.u8(ht) : 0;
    const bodyLength = bl ? f.i64(bl, "bodyLength") : 0;
    if (bodyLength < 0 || pos + len + bodyLength > bytes.byteLength) {
      bad(
        `message ${messages} declares a ${bodyLength}-byte body; ${
          bytes.byteLength - pos - len
        } remain`,
      );
    }
    if (!h) bad(`message ${messages} has no header`);
    const ht0 = f.deref(h, "header");
    checkVectors(f, msg, [[4, 4, "message metadata"]]);
    if (messages === 0 && header !== HEADER_SCHEMA) bad("the stream must start with a schema");
    if (header === HEADER_SCHEMA) {
      if (messages !== 0) bad("a second schema in one stream");
      checkVectors(f, ht0, [[2, 4, "schema metadata"], [3, 8, "schema features"]]);
      const fp = f.field(ht0, 1);
      if (fp) {
        const { start, length } = f.vector(fp, 4, "schema fields", MAX_FIELDS);
        for (let i = 0; i < length; i++) checkField(f, f.deref(start + 4 * i, "field"), 0);
      }
    } else if (header === HEADER_RECORD_BATCH) {
      const lp = f.field(ht0, 0);
      const rows = lp ? f.i64(lp, "batch length") : 0;
      if (rows < 0) bad(`a record batch of ${rows} rows`);
      if ((totalRows += rows) > maxRows) {
        throw new HttpError(
          413,
          "too_many_rows",
          `Arrow body has more than ${maxRows} rows; the limit is ${maxRows}`,
        );
      }
      checkVectors(f, ht0, [[2, 16, "buffers"], [4, 8, "variadic buffer counts"]]);
      // FieldNode {length: i64, null_count: i64}: no node may hold more values than the body could.
      const np = f.field(ht0, 1);
      if (np) {
        const { start, length } = f.vector(np, 16, "field nodes", 4 * MAX_FIELDS);
        for (let i = 0; i < length; i++) {
          const n = f.i64(start + 16 * i, "node length");
          if (n < 0 || n > maxValues) bad(`a column of ${n} values (at most ${maxValues})`);
        }
      }
    } else bad(`message type ${header} is not accepted (schema and record batches only)`);
    pos += len + bodyLength;
    messages++;
  }
}
