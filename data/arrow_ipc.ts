/**
 * Arrow IPC framing, read message by message with bounded memory. A message is a continuation
 * marker 0xFFFFFFFF, an int32 metadata length, a flatbuffer `Message` (which holds the body
 * length) and the body; the stream ends with a zero length or at the end of the file. The file
 * format is the same stream after the 8-byte magic "ARROW1\0\0", followed by a footer.
 *
 * We walk the framing ourselves so that every length is checked against the file size before
 * anything is read or allocated, and so that one record batch at a time can be decoded by
 * apache-arrow (handed the schema message, that batch's message and an end marker). apache-arrow
 * errors on corrupt metadata are rethrown as ArrowIpcError naming the file and the byte offset.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import * as A from "apache-arrow";
import { verifyMessage } from "./arrow_verify.ts";

export class ArrowIpcError extends Error {
  override name = "ArrowIpcError";
}

const FILE_MAGIC = [0x41, 0x52, 0x52, 0x4f, 0x57, 0x31]; // "ARROW1"
/** Flatbuffer metadata above this is not something a real writer produces. */
const MAX_METADATA_BYTES = 64 << 20;
const EOS = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);

/** A synchronous random-access byte source (a file descriptor, or bytes in memory for tests). */
export interface ByteSource {
  readonly size: number;
  readonly name: string;
  /** Fill `into` from byte `pos`; throws if the source ends first. */
  readAt(pos: number, into: Uint8Array): void;
  close(): void;
}

export function fileSource(path: string): ByteSource {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch (e) {
    throw new ArrowIpcError(`${path}: cannot open: ${(e as Error).message}`);
  }
  const size = fstatSync(fd).size;
  return {
    size,
    name: path,
    readAt(pos, into) {
      let done = 0;
      while (done < into.length) {
        const n = readSync(fd, into, done, into.length - done, pos + done);
        if (n <= 0) {
          throw new ArrowIpcError(
            `${path}: unexpected end of file at byte ${
              pos + done
            } (wanted ${into.length} bytes from ${pos})`,
          );
        }
        done += n;
      }
    },
    close: () => closeSync(fd),
  };
}

export function bytesSource(bytes: Uint8Array, name = "<bytes>"): ByteSource {
  return {
    size: bytes.length,
    name,
    readAt(pos, into) {
      if (pos + into.length > bytes.length) {
        throw new ArrowIpcError(
          `${name}: unexpected end of data at byte ${bytes.length} (wanted ${into.length} bytes from ${pos})`,
        );
      }
      into.set(bytes.subarray(pos, pos + into.length));
    },
    close() {},
  };
}

export interface MessageFrame {
  /** Byte offset of the frame (continuation marker) in the file. */
  offset: number;
  /** Bytes of prefix + metadata (a multiple of 8 for conforming writers). */
  headerBytes: number;
  bodyLength: number;
  type: "schema" | "recordbatch" | "dictionary" | "other";
  message: A.Message;
}

function decodeMessage(meta: Uint8Array, src: ByteSource, at: number): A.Message {
  // apache-arrow trusts the flatbuffer's offsets and lengths; check them first.
  try {
    verifyMessage(meta);
  } catch (e) {
    throw new ArrowIpcError(
      `${src.name}: message at byte ${at}: corrupt metadata: ${(e as Error).message}`,
    );
  }
  try {
    const m = A.Message.decode(meta);
    // Touch the fields we rely on, so that a corrupt flatbuffer fails here rather than later.
    void m.headerType;
    void m.version;
    return m;
  } catch (e) {
    throw new ArrowIpcError(
      `${src.name}: message metadata at byte ${at} is corrupt (${(e as Error).message})`,
    );
  }
}

/**
 * Walk the messages of an IPC stream or file. Every frame's lengths are validated against the
 * file size before the next read; bodies are not read here (see readFrame).
 */
export function* walkFrames(src: ByteSource): Generator<MessageFrame> {
  const head = new Uint8Array(8);
  let pos = 0, end = src.size;
  if (src.size >= 8) {
    src.readAt(0, head);
    if (FILE_MAGIC.every((b, i) => head[i] === b)) {
      pos = 8;
      // The file format ends with the footer, its int32 length and the magic: stop before them
      // even if a writer left out the end-of-stream marker.
      if (src.size >= 18) {
        const tail = new Uint8Array(10);
        src.readAt(src.size - 10, tail);
        const footer = new DataView(tail.buffer).getInt32(0, true);
        if (
          FILE_MAGIC.every((b, i) => tail[4 + i] === b) && footer > 0 && footer <= src.size - 18
        ) end = src.size - 10 - footer;
      }
    }
  }
  const pre = new Uint8Array(8);
  const dv = new DataView(pre.buffer);
  while (pos < end) {
    if (pos + 4 > src.size) {
      throw new ArrowIpcError(
        `${src.name}: ${src.size - pos} stray bytes at byte ${pos}, too few for a message length`,
      );
    }
    src.readAt(pos, pre.subarray(0, Math.min(8, src.size - pos)));
    let prefix = 8, metaLen: number;
    if (dv.getUint32(0, true) === 0xffffffff) {
      if (pos + 8 > src.size) {
        throw new ArrowIpcError(
          `${src.name}: message at byte ${pos} is cut off after its continuation marker`,
        );
      }
      metaLen = dv.getInt32(4, true);
    } else {
      // Pre-1.0 streams have no continuation marker: the length comes first.
      prefix = 4;
      metaLen = dv.getInt32(0, true);
    }
    if (metaLen === 0) return; // end-of-stream marker (a file's footer follows it)
    if (metaLen < 0 || metaLen > MAX_METADATA_BYTES) {
      throw new ArrowIpcError(
        `${src.name}: message at byte ${pos}: metadata length ${metaLen} is outside 1..${MAX_METADATA_BYTES}`,
      );
    }
    if (pos + prefix + metaLen > src.size) {
      throw new ArrowIpcError(
        `${src.name}: message at byte ${pos}: metadata length ${metaLen} runs past the end of the file (${src.size} bytes)`,
      );
    }
    const meta = new Uint8Array(metaLen);
    src.readAt(pos + prefix, meta);
    const message = decodeMessage(meta, src, pos);
    const bodyLength = Number(message.bodyLength);
    const end = pos + prefix + metaLen + bodyLength;
    if (!Number.isSafeInteger(bodyLength) || bodyLength < 0 || end > src.size) {
      throw new ArrowIpcError(
        `${src.name}: message at byte ${pos}: body length ${message.bodyLength} runs past the end of the file (${src.size} bytes)`,
      );
    }
    const t = message.headerType;
    const type = t === A.MessageHeader.Schema
      ? "schema"
      : t === A.MessageHeader.RecordBatch
      ? "recordbatch"
      : t === A.MessageHeader.DictionaryBatch
      ? "dictionary"
      : "other";
    yield { offset: pos, headerBytes: prefix + metaLen, bodyLength, type, message };
    pos = end;
  }
}

/** The raw bytes of one whole frame (prefix, metadata, body). */
export function readFrame(src: ByteSource, f: MessageFrame): Uint8Array {
  const out = new Uint8Array(f.headerBytes + f.bodyLength);
  src.readAt(f.offset, out);
  return out;
}

/**
 * Decode one record batch: apache-arrow reads [schema frame][batch frame][end marker]. The batch
 * is read straight into its place in that buffer, so its body is copied exactly once.
 */
export function decodeBatch(
  src: ByteSource,
  schemaFrame: Uint8Array,
  f: MessageFrame,
  onBytes?: (frame: Uint8Array) => void,
): A.RecordBatch {
  const n = f.headerBytes + f.bodyLength;
  // Keep the batch 8-aligned inside the buffer: apache-arrow makes typed views onto the body.
  const lead = Math.ceil(schemaFrame.length / 8) * 8;
  const buf = new Uint8Array(lead + n + EOS.length);
  buf.set(schemaFrame, 0);
  src.readAt(f.offset, buf.subarray(lead, lead + n));
  buf.set(EOS, lead + n);
  onBytes?.(buf.subarray(lead, lead + n));
  // A padded gap is not valid framing; a schema frame padded to 8 never needs one.
  const stream = lead === schemaFrame.length ? buf : concat(schemaFrame, buf.subarray(lead));
  try {
    const reader = A.RecordBatchReader.from(stream);
    const r = reader.next();
    if (r.done || !r.value) throw new Error("no record batch decoded");
    return r.value as A.RecordBatch;
  } catch (e) {
    if (e instanceof ArrowIpcError) throw e;
    throw new ArrowIpcError(
      `${src.name}: record batch at byte ${f.offset} is corrupt (${(e as Error).message})`,
    );
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** The schema of a stream (its first message), decoded by apache-arrow, and its raw frame. */
export function readSchema(
  src: ByteSource,
): { schema: A.Schema; frame: Uint8Array; frames: Generator<MessageFrame> } {
  const frames = walkFrames(src);
  const first = frames.next();
  if (first.done) throw new ArrowIpcError(`${src.name}: no Arrow IPC messages (empty stream)`);
  if (first.value.type !== "schema") {
    throw new ArrowIpcError(
      `${src.name}: the first message (byte ${first.value.offset}) is a ${first.value.type}, not a schema; Arrow files whose schema is only in the footer are not streamed`,
    );
  }
  const frame = readFrame(src, first.value);
  let schema: A.Schema;
  try {
    schema = first.value.message.header() as A.Schema;
    if (!(schema instanceof A.Schema)) throw new Error("not a schema");
    void schema.fields.length;
  } catch (e) {
    throw new ArrowIpcError(
      `${src.name}: schema message at byte ${first.value.offset} is corrupt (${
        (e as Error).message
      })`,
    );
  }
  return { schema, frame, frames };
}

/** The values of a primitive column chunk (no nulls allowed), as a typed view. */
export type Numeric =
  | Float32Array
  | Float64Array
  | Uint16Array
  | Int16Array
  | Int32Array
  | Uint32Array
  | Uint8Array
  | Int8Array;

export function primitiveValues(data: A.Data, what: string, source: string): Numeric {
  if (data.nullCount > 0) {
    throw new ArrowIpcError(
      `${source}: ${what} has ${data.nullCount} nulls; activations must not be null`,
    );
  }
  const v = data.values as Numeric;
  if (!ArrayBuffer.isView(v) || v instanceof BigInt64Array || v instanceof BigUint64Array) {
    throw new ArrowIpcError(`${source}: ${what} is not a numeric column of 8- to 32-bit values`);
  }
  return v.subarray(data.offset, data.offset + data.length);
}
