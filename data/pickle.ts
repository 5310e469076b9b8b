/**
 * A safe subset of Python's pickle (protocols 2-5): enough for PyTorch state dicts — dicts,
 * lists, tuples, strings, ints, floats, booleans, None, persistent ids (tensor storages) and
 * calls to a short list of globals that the caller names and implements in TypeScript. Nothing
 * is ever looked up by name or executed: an opcode outside the subset, or a global the caller
 * did not allow, is an error naming the opcode (or module.name) and its byte offset. Lengths are
 * checked against the remaining bytes, and the stack and memo are bounded.
 */

export class PickleError extends Error {
  override name = "PickleError";
}

export interface PyTuple {
  kind: "tuple";
  items: PyValue[];
}
export interface PyGlobal {
  kind: "global";
  module: string;
  name: string;
}
/** A dict: keys are strings or numbers; insertion order is kept (Map). */
export type PyDict = Map<string | number, PyValue>;
export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | PyTuple
  | PyDict
  | PyGlobal
  | { kind: "object"; value: unknown };

export interface UnpickleOptions {
  /** Calls allowed by REDUCE/NEWOBJ, keyed "module.name"; each returns the constructed value. */
  globals: Record<string, (args: PyValue[]) => PyValue>;
  /** BUILD on a value (e.g. an OrderedDict's __dict__); default: ignore the state. */
  build?: (obj: PyValue, state: PyValue) => PyValue;
  /** Resolve a persistent id (PyTorch: storages). Without it BINPERSID is refused. */
  persistentLoad?: (pid: PyValue) => PyValue;
  source?: string;
  /** Told the offset just past STOP, where a stream of several pickles (legacy torch.save) goes on. */
  stoppedAt?: (offset: number) => void;
}

const MAX_STACK = 1 << 20;
const MAX_MEMO = 1 << 22;
const MARK = Symbol("mark");
type Slot = PyValue | typeof MARK;

export const tuple = (items: PyValue[]): PyTuple => ({ kind: "tuple", items });
export const isTuple = (v: PyValue): v is PyTuple =>
  typeof v === "object" && v !== null && !Array.isArray(v) && !(v instanceof Map) &&
  !(v instanceof Uint8Array) && (v as PyTuple).kind === "tuple";
export const isGlobal = (v: PyValue): v is PyGlobal =>
  typeof v === "object" && v !== null && (v as PyGlobal).kind === "global";

const OPNAMES: Record<number, string> = {
  0x80: "PROTO",
  0x95: "FRAME",
  0x7d: "EMPTY_DICT",
  0x5d: "EMPTY_LIST",
  0x29: "EMPTY_TUPLE",
  0x28: "MARK",
  0x63: "GLOBAL",
  0x93: "STACK_GLOBAL",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x68: "BINGET",
  0x6a: "LONG_BINGET",
  0x94: "MEMOIZE",
  0x58: "BINUNICODE",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4d: "BININT2",
  0x8a: "LONG1",
  0x47: "BINFLOAT",
  0x74: "TUPLE",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x81: "NEWOBJ",
  0x62: "BUILD",
  0x73: "SETITEM",
  0x75: "SETITEMS",
  0x61: "APPEND",
  0x65: "APPENDS",
  0x4e: "NONE",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
};

/** Run the pickle in `b` and return the value it builds. */
export function unpickle(b: Uint8Array, o: UnpickleOptions): PyValue {
  const src = o.source ?? "<pickle>";
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const stack: Slot[] = [];
  const memo = new Map<number, PyValue>();
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let p = 0, op = 0, opAt = 0;
  const fail = (msg: string): never => {
    const name = OPNAMES[op] ?? `0x${op.toString(16).padStart(2, "0")}`;
    throw new PickleError(`${src}: pickle opcode ${name} at byte ${opAt}: ${msg}`);
  };
  const need = (k: number) => {
    if (k < 0 || p + k > b.length) fail(`needs ${k} bytes but only ${b.length - p} remain`);
  };
  const push = (v: Slot) => {
    if (stack.length >= MAX_STACK) fail(`stack deeper than ${MAX_STACK}`);
    stack.push(v);
  };
  const pop = (): PyValue => {
    const v = stack.pop();
    if (v === undefined || v === MARK) fail("stack underflow");
    return v as PyValue;
  };
  const top = (): PyValue => {
    const v = stack[stack.length - 1];
    if (v === undefined || v === MARK) fail("stack underflow");
    return v as PyValue;
  };
  const popMark = (): PyValue[] => {
    let i = stack.length - 1;
    while (i >= 0 && stack[i] !== MARK) i--;
    if (i < 0) fail("no MARK on the stack");
    const items = stack.splice(i + 1) as PyValue[];
    stack.pop();
    return items;
  };
  const str = (k: number): string => {
    need(k);
    try {
      return utf8.decode(b.subarray(p, p += k));
    } catch {
      return fail("string is not valid UTF-8");
    }
  };
  const latin1 = (k: number): string => {
    need(k);
    let s = "";
    for (let i = 0; i < k; i++) s += String.fromCharCode(b[p + i]);
    p += k;
    return s;
  };
  const line = (): string => {
    const end = b.indexOf(0x0a, p);
    if (end < 0 || end - p > 256) fail("unterminated name");
    return latin1(end - p + 1).slice(0, -1);
  };
  const memoPut = (i: number, v: PyValue) => {
    if (memo.size >= MAX_MEMO && !memo.has(i)) fail(`memo larger than ${MAX_MEMO}`);
    memo.set(i, v);
  };
  const memoGet = (
    i: number,
  ) => (memo.has(i) ? memo.get(i)! : fail(`memo entry ${i} was never stored`));
  const call = (fn: PyValue, args: PyValue): PyValue => {
    if (!isGlobal(fn)) fail(`calls only allowed globals, got ${describe(fn)}`);
    const g = fn as PyGlobal;
    const impl = o.globals[`${g.module}.${g.name}`];
    if (!impl) fail(`global ${g.module}.${g.name} is not allowed`);
    if (!isTuple(args)) {
      fail(`arguments of ${g.module}.${g.name} must be a tuple, got ${describe(args)}`);
    }
    try {
      return impl((args as PyTuple).items);
    } catch (e) {
      if (e instanceof PickleError) throw e;
      return fail(`${g.module}.${g.name}: ${(e as Error).message}`);
    }
  };
  const setItems = (d: PyValue, kv: PyValue[]) => {
    if (!(d instanceof Map)) fail(`SETITEM(S) on ${describe(d)}, not a dict`);
    if (kv.length % 2) fail("odd number of items for a dict");
    for (let i = 0; i < kv.length; i += 2) {
      const k = kv[i];
      if (typeof k !== "string" && typeof k !== "number") {
        fail(`dict key ${describe(k)} is not a string or int`);
      }
      (d as PyDict).set(k as string | number, kv[i + 1]);
    }
  };

  for (;;) {
    opAt = p;
    need(1);
    op = b[p++];
    switch (op) {
      case 0x80: // PROTO
        need(1);
        if (b[p] > 5) fail(`protocol ${b[p]} is newer than 5`);
        p++;
        break;
      case 0x95: // FRAME: a length hint only
        need(8);
        p += 8;
        break;
      case 0x7d:
        push(new Map());
        break;
      case 0x5d:
        push([]);
        break;
      case 0x29:
        push(tuple([]));
        break;
      case 0x28:
        push(MARK);
        break;
      case 0x63: { // GLOBAL module\nname\n
        const module = line(), name = line();
        push({ kind: "global", module, name });
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof name !== "string" || typeof module !== "string") {
          fail("module and name must be strings");
        }
        push({ kind: "global", module: module as string, name: name as string });
        break;
      }
      case 0x71:
        need(1);
        memoPut(b[p++], top());
        break;
      case 0x72:
        need(4);
        memoPut(dv.getUint32(p, true), top());
        p += 4;
        break;
      case 0x94:
        memoPut(memo.size, top());
        break;
      case 0x68:
        need(1);
        push(memoGet(b[p++]));
        break;
      case 0x6a:
        need(4);
        push(memoGet(dv.getUint32(p, true)));
        p += 4;
        break;
      case 0x58:
        need(4);
        push(str(dv.getUint32((p += 4) - 4, true)));
        break;
      case 0x8c:
        need(1);
        push(str(b[p++]));
        break;
      case 0x8d: {
        need(8);
        const k = dv.getBigUint64(p, true);
        p += 8;
        if (k > BigInt(b.length - p)) fail(`string of ${k} bytes but only ${b.length - p} remain`);
        push(str(Number(k)));
        break;
      }
      case 0x54:
        need(4);
        push(latin1(dv.getInt32((p += 4) - 4, true)));
        break;
      case 0x55:
        need(1);
        push(latin1(b[p++]));
        break;
      case 0x42: {
        need(4);
        const k = dv.getUint32(p, true);
        p += 4;
        need(k);
        push(b.slice(p, p += k));
        break;
      }
      case 0x43: {
        need(1);
        const k = b[p++];
        need(k);
        push(b.slice(p, p += k));
        break;
      }
      case 0x4a:
        need(4);
        push(dv.getInt32((p += 4) - 4, true));
        break;
      case 0x4b:
        need(1);
        push(b[p++]);
        break;
      case 0x4d:
        need(2);
        push(dv.getUint16((p += 2) - 2, true));
        break;
      case 0x8a: { // LONG1: little-endian two's complement of n bytes
        need(1);
        const k = b[p++];
        need(k);
        let v = 0n;
        for (let i = k - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[p + i]);
        if (k > 0 && b[p + k - 1] & 0x80) v -= 1n << BigInt(8 * k);
        p += k;
        push(
          v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER)
            ? Number(v)
            : v,
        );
        break;
      }
      case 0x47:
        need(8);
        push(dv.getFloat64((p += 8) - 8, false)); // big-endian, as pickle writes it
        break;
      case 0x74:
        push(tuple(popMark()));
        break;
      case 0x85:
        push(tuple([pop()]));
        break;
      case 0x86: {
        const y = pop(), x = pop();
        push(tuple([x, y]));
        break;
      }
      case 0x87: {
        const z = pop(), y = pop(), x = pop();
        push(tuple([x, y, z]));
        break;
      }
      case 0x51: {
        const pid = pop();
        if (!o.persistentLoad) fail("persistent ids are not allowed here");
        try {
          push(o.persistentLoad!(pid));
        } catch (e) {
          if (e instanceof PickleError) throw e;
          fail(`persistent id ${describe(pid)}: ${(e as Error).message}`);
        }
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), fn = pop();
        push(call(fn, args));
        break;
      }
      case 0x81: { // NEWOBJ: cls.__new__(cls, *args)
        const args = pop(), cls = pop();
        push(call(cls, args));
        break;
      }
      case 0x62: { // BUILD
        const state = pop(), obj = pop();
        push(o.build ? o.build(obj, state) : obj);
        break;
      }
      case 0x73: {
        const v = pop(), k = pop();
        setItems(top(), [k, v]);
        break;
      }
      case 0x75: {
        const kv = popMark();
        setItems(top(), kv);
        break;
      }
      case 0x61: {
        const v = pop(), l = top();
        if (!Array.isArray(l)) fail(`APPEND to ${describe(l)}, not a list`);
        (l as PyValue[]).push(v);
        break;
      }
      case 0x65: {
        const items = popMark(), l = top();
        if (!Array.isArray(l)) fail(`APPENDS to ${describe(l)}, not a list`);
        for (const v of items) (l as PyValue[]).push(v);
        break;
      }
      case 0x4e:
        push(null);
        break;
      case 0x88:
        push(true);
        break;
      case 0x89:
        push(false);
        break;
      case 0x30:
        pop();
        break;
      case 0x31:
        popMark();
        break;
      case 0x32:
        push(top());
        break;
      case 0x2e: { // STOP
        const v = pop();
        if (stack.length) fail(`${stack.length} values left on the stack`);
        o.stoppedAt?.(p);
        return v;
      }
      default:
        fail(
          OPNAMES[op]
            ? "is not allowed"
            : "is not in the allowed subset (no code execution, no unknown opcodes)",
        );
    }
  }
}

export function describe(v: PyValue): string {
  if (v === null) return "None";
  if (typeof v === "string") return JSON.stringify(v.length > 40 ? v.slice(0, 37) + "..." : v);
  if (typeof v !== "object") return String(v);
  if (Array.isArray(v)) return `list(${v.length})`;
  if (v instanceof Map) return `dict(${v.size})`;
  if (v instanceof Uint8Array) return `bytes(${v.length})`;
  if (isGlobal(v)) return `${v.module}.${v.name}`;
  if (isTuple(v)) return `tuple(${v.items.length})`;
  return "object";
}
