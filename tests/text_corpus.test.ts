// Text datasets: every format read (files written here), folder order and Hugging Face shards,
// zstd, chunk boundaries inside multi-byte characters, each bad-input error with its message,
// and packing into token rows against rows worked out by hand.
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { zstdCompressSync } from "node:zlib";
import { parquetWriteBuffer } from "hyparquet-writer";
import {
  type Corpus,
  type CorpusDocument,
  CorpusError,
  type CorpusOptions,
  openCorpus,
  type TokenRow,
  type TokenRowOptions,
  tokenRows,
} from "../data/text/mod.ts";
import type { Tokenizer } from "../data/text/tokenizer.ts";
import { assert, assertEquals, test } from "./harness.ts";

const BOS = 256, EOS = 257, PAD = 258;

/**
 * One id per UTF-8 byte; the control characters \x02 and \x03 stand for BOS and EOS so that a
 * document can start with one (the packing rules must not add a second).
 */
function byteTokenizer(addBos: boolean, special = true): Tokenizer {
  const enc = new TextEncoder();
  return {
    vocabSize: 259,
    bosId: special ? BOS : null,
    eosId: special ? EOS : null,
    padId: special ? PAD : null,
    addBos,
    specialIds: new Set(special ? [BOS, EOS, PAD] : []),
    encode: (text) => Int32Array.from(enc.encode(text), (b) => (b === 2 ? BOS : b === 3 ? EOS : b)),
    decode: (ids) => new TextDecoder().decode(Uint8Array.from(ids as ArrayLike<number>)),
    piece: (id) => String.fromCharCode(id),
  };
}

const dir = await mkdtemp(join(tmpdir(), "text-corpus-"));
let fileNo = 0;
async function put(name: string, content: string | Uint8Array): Promise<string> {
  const path = join(dir, name);
  await mkdir(join(path, ".."), { recursive: true });
  await writeFile(path, content);
  return path;
}
const fresh = (ext: string) => `f${fileNo++}${ext}`;

async function docs(path: string, opts: CorpusOptions = {}): Promise<CorpusDocument[]> {
  const out: CorpusDocument[] = [];
  for await (const d of (await openCorpus(path, opts)).documents()) out.push(d);
  return out;
}
const texts = (ds: CorpusDocument[]) => ds.map((d) => d.text);
const lines = (ds: CorpusDocument[]) => ds.map((d) => d.line);

/** The CorpusError a promise rejects with; its message must hold every fragment. */
async function rejects(p: Promise<unknown>, ...fragments: string[]): Promise<CorpusError> {
  try {
    await p;
  } catch (e) {
    assert(e instanceof CorpusError, `expected a CorpusError, got ${e}`);
    for (const f of fragments) {
      assert(
        e.message.includes(f),
        `error ${JSON.stringify(e.message)} lacks ${JSON.stringify(f)}`,
      );
    }
    return e;
  }
  throw new Error(`expected a CorpusError mentioning ${fragments.join(", ")}`);
}

async function rows(corpus: Corpus, tok: Tokenizer, opts: TokenRowOptions) {
  const out: { ids: number[]; index: number; length?: number }[] = [];
  for await (const r of tokenRows(corpus, tok, opts).rows()) {
    out.push({
      ids: [...r.ids],
      index: r.index,
      ...(r.length !== undefined ? { length: r.length } : {}),
    });
  }
  return out;
}
const ids = (s: string) => [...new TextEncoder().encode(s)];
/** Expected rows, numbered from 0; `short` marks a padded row and its real length. */
type Expected = number[] | { ids: number[]; length: number };
const short = (ids: number[], length: number) => ({ ids, length });
const expectRows = (...rs: Expected[]) =>
  rs.map((r, index) =>
    Array.isArray(r) ? { ids: r, index } : { ids: r.ids, index, length: r.length }
  );

/** An .npy file of integers, written here by hand (not by our writer). */
function npy(descr: string, shape: number[], values: number[] | bigint[]): Uint8Array {
  const dims = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${dims}, }`;
  header += " ".repeat(63 - ((10 + header.length) % 64)) + "\n";
  const size = Number(descr.slice(2));
  const out = new Uint8Array(10 + header.length + values.length * size);
  out.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0], 0);
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  const dv = new DataView(out.buffer, 10 + header.length);
  values.forEach((v, i) => {
    if (descr === "<i4") dv.setInt32(i * 4, Number(v), true);
    else if (descr === "<i8") dv.setBigInt64(i * 8, BigInt(v), true);
    else if (descr === "<u2") dv.setUint16(i * 2, Number(v), true);
    else if (descr === "<f4") dv.setFloat32(i * 4, Number(v), true);
  });
  return out;
}

// ---- plain text ----

test("text: blank lines separate documents; CRLF, BOM and line numbers", async () => {
  const f = await put(
    fresh(".txt"),
    "\uFEFFfirst line\r\nstill first\r\n\r\n\r\n  \nsecond\n\nthird\n",
  );
  const ds = await docs(f);
  assertEquals(texts(ds), ["first line\nstill first", "second", "third"]);
  assertEquals(lines(ds), [1, 6, 8]);
  const c = await openCorpus(f);
  for await (const _ of c.documents());
  assertEquals(c.counts(), { documents: 3, emptySkipped: 0, files: 1 });
  assertEquals(c.describe(), `text ${f}, separator "blank"`);
});

test("text: separators line, file and a marker line; empty documents skipped and counted", async () => {
  const f = await put(fresh(".txt"), "a\n\nb\n<|endoftext|>\n<|endoftext|>\nc\nd\n<|endoftext|>\n");
  assertEquals(texts(await docs(f, { separator: "line" })), [
    "a",
    "b",
    "<|endoftext|>",
    "<|endoftext|>",
    "c",
    "d",
    "<|endoftext|>",
  ]);
  const byLine = await openCorpus(f, { separator: "line" });
  for await (const _ of byLine.documents());
  assertEquals(byLine.counts().emptySkipped, 1);
  assertEquals(texts(await docs(f, { separator: "file" })), [
    "a\n\nb\n<|endoftext|>\n<|endoftext|>\nc\nd\n<|endoftext|>",
  ]);
  const marked = await openCorpus(f, { separator: "<|endoftext|>" });
  const got: CorpusDocument[] = [];
  for await (const d of marked.documents()) got.push(d);
  assertEquals(texts(got), ["a\n\nb", "c\nd"]);
  assertEquals(lines(got), [1, 6]);
  assertEquals(marked.counts(), { documents: 2, emptySkipped: 1, files: 1 });
});

test("text: a folder is read in sorted path order, other files ignored", async () => {
  const root = join(dir, "folder");
  await put("folder/b.txt", "two\n\nthree");
  await put("folder/a.txt", "one");
  await put("folder/sub/c.txt", "four");
  await put("folder/README.md", "not a document");
  await put("folder/.hidden.txt", "hidden");
  const c = await openCorpus(root);
  assertEquals(c.files.map((f) => f.slice(root.length + 1)), ["a.txt", "b.txt", "sub/c.txt"]);
  const ds: CorpusDocument[] = [];
  for await (const d of c.documents()) ds.push(d);
  assertEquals(texts(ds), ["one", "two", "three", "four"]);
  assertEquals(c.counts().files, 3);
});

test("text: every chunk size gives the same documents (multi-byte characters split across reads)", async () => {
  const body = "héllo wörld 中文 😀\n\nzwei 🤖🤖\r\n\r\nκαλημέρα\n\n".repeat(40);
  const f = await put(fresh(".txt"), body);
  const whole = texts(await docs(f));
  assertEquals(whole.length, 120);
  assertEquals(whole.slice(0, 3), ["héllo wörld 中文 😀", "zwei 🤖🤖", "καλημέρα"]);
  for (const chunkBytes of [1, 2, 3, 5, 7, 64]) {
    assertEquals(texts(await docs(f, { chunkBytes })), whole, `chunkBytes ${chunkBytes}`);
  }
  // The same through zstd, compressed bytes arriving a few at a time.
  const z = await put(fresh(".txt.zst"), zstdCompressSync(new TextEncoder().encode(body)));
  assertEquals(texts(await docs(z, { chunkBytes: 5 })), whole);
});

test("text: a file much bigger than the chunk size, and the document-size bound", async () => {
  const para = (i: number) => `paragraph ${i} ` + "ü".repeat(i % 50);
  const body = Array.from({ length: 3000 }, (_, i) => para(i)).join("\n\n");
  const f = await put(fresh(".txt"), body);
  const ds = await docs(f, { chunkBytes: 4096 });
  assertEquals(ds.length, 3000);
  assertEquals(ds[2999].text, para(2999));
  assertEquals(ds[2999].line, 2 * 2999 + 1);
  const long = await put(fresh(".txt"), "short\n" + "x".repeat(5000) + "\nshort\n");
  await rejects(
    docs(long, { chunkBytes: 512, maxDocumentBytes: 4096 }),
    long,
    "line 2",
    "line longer than maxDocumentBytes = 4096",
  );
  await rejects(
    docs(f, { separator: "file", maxDocumentBytes: 10_000 }),
    f,
    "line 1",
    "longer than maxDocumentBytes = 10000",
  );
});

// ---- JSON lines ----

test("jsonl: text field, custom field, ids lists, null and blank lines", async () => {
  const f = await put(
    fresh(".jsonl"),
    [
      JSON.stringify({ text: "first", id: 1 }),
      "",
      JSON.stringify({ text: "é\n中", body: "other" }),
      JSON.stringify({ text: null }),
      JSON.stringify({ text: "" }),
      JSON.stringify({ text: [5, 6, 7] }),
    ].join("\n") + "\n",
  );
  const c = await openCorpus(f);
  const ds: CorpusDocument[] = [];
  for await (const d of c.documents()) ds.push(d);
  assertEquals(texts(ds), ["first", "é\n中", undefined]);
  assertEquals([...ds[2].ids!], [5, 6, 7]);
  assertEquals(lines(ds), [1, 3, 6]);
  assertEquals(c.counts(), { documents: 3, emptySkipped: 2, files: 1 });
  const g = await put(fresh(".jsonl"), '{"body": "x"}\n{"body": "y"}');
  assertEquals(texts(await docs(g, { field: "body" })), ["x", "y"]);
});

test("jsonl.zst: streaming decompression, several frames, tiny reads", async () => {
  const enc = new TextEncoder();
  const part = (from: number) =>
    Array.from({ length: 50 }, (_, i) => JSON.stringify({ text: `doc ${from + i} 😀` })).join(
      "\n",
    ) + "\n";
  const frames = [zstdCompressSync(enc.encode(part(0))), zstdCompressSync(enc.encode(part(50)))];
  const bytes = new Uint8Array(frames[0].length + frames[1].length);
  bytes.set(frames[0]);
  bytes.set(frames[1], frames[0].length);
  const f = await put(fresh(".jsonl.zst"), bytes);
  for (const chunkBytes of [3, 17, 1 << 20]) {
    const ds = await docs(f, { chunkBytes });
    assertEquals(ds.length, 100);
    assertEquals(ds[99].text, "doc 99 😀");
    assertEquals(ds[99].line, 100);
  }
  const cut = await put(fresh(".jsonl.zst"), bytes.subarray(0, bytes.length - 9));
  await rejects(docs(cut), cut, "zstd");
});

// ---- Parquet ----

function parquet(
  columns: { name: string; data: unknown[]; type?: string }[],
  rowGroupSize = 2,
  schema?: unknown[],
) {
  return new Uint8Array(
    parquetWriteBuffer({
      // deno-lint-ignore no-explicit-any
      columnData: columns as any,
      // deno-lint-ignore no-explicit-any
      ...(schema ? { schema: schema as any } : {}),
      rowGroupSize,
    }),
  );
}

/** The three-level LIST layout pyarrow (and so Hugging Face datasets) writes for list<int32>. */
const idsSchema = (name: string, leaf: "INT32" | "INT64") => [
  { name: "root", num_children: 1 },
  { name, repetition_type: "OPTIONAL", num_children: 1, converted_type: "LIST" },
  { name: "list", repetition_type: "REPEATED", num_children: 1 },
  { name: "element", repetition_type: "OPTIONAL", type: leaf },
];

test("parquet: a text column over several row groups, rows numbered from 0", async () => {
  const f = await put(
    fresh(".parquet"),
    parquet([
      { name: "id", data: [0, 1, 2, 3, 4], type: "INT32" },
      { name: "text", data: ["alpha", "", "γάμμα 😀", null, "epsilon"], type: "STRING" },
    ]),
  );
  const c = await openCorpus(f);
  const ds: CorpusDocument[] = [];
  for await (const d of c.documents()) ds.push(d);
  assertEquals(texts(ds), ["alpha", "γάμμα 😀", "epsilon"]);
  assertEquals(lines(ds), [0, 2, 4]);
  assertEquals(c.counts(), { documents: 3, emptySkipped: 2, files: 1 });
});

test("parquet: a list-of-integers column gives pre-tokenised ids", async () => {
  const f = await put(
    fresh(".parquet"),
    parquet(
      [{ name: "input_ids", data: [[1, 2, 3], [4], [5, 6]] }],
      2,
      idsSchema("input_ids", "INT32"),
    ),
  );
  const ds = await docs(f, { field: "input_ids" });
  assertEquals(ds.map((d) => [...d.ids!]), [[1, 2, 3], [4], [5, 6]]);
  assertEquals(lines(ds), [0, 1, 2]);
  const wide = await put(
    fresh(".parquet"),
    parquet([{ name: "tokens", data: [[1n, 50256n], [3n]] }], 1, idsSchema("tokens", "INT64")),
  );
  assertEquals((await docs(wide, { field: "tokens" })).map((d) => [...d.ids!]), [[1, 50256], [3]]);
  // Text stored as JSON is not taken for text.
  const json = await put(
    fresh(".parquet"),
    parquet([{ name: "text", data: [{ a: 1 }], type: "JSON" }]),
  );
  await rejects(docs(json), json, 'column "text" is BYTE_ARRAY (JSON)');
});

test("parquet: a Hugging Face folder of shards, split chosen, shards in order, a missing one found", async () => {
  const root = join(dir, "hf");
  const shard = (split: string, i: number, n: number, words: string[]) =>
    put(
      `hf/data/${split}-0000${i}-of-0000${n}.parquet`,
      parquet([{ name: "text", data: words, type: "STRING" }]),
    );
  await shard("train", 1, 2, ["c", "d"]);
  await shard("train", 0, 2, ["a", "b"]);
  await shard("test", 0, 1, ["t"]);
  await put("hf/README.md", "# card");
  await put("hf/dataset_info.json", "{}");
  assertEquals(texts(await docs(root)), ["a", "b", "c", "d"]);
  assertEquals(texts(await docs(root, { split: "test" })), ["t"]);
  await rejects(
    docs(root, { split: "validation" }),
    root,
    'no split "validation"',
    '"test", "train"',
  );
  await rm(join(root, "data/train-00001-of-00002.parquet"));
  await rejects(docs(root), root, 'shard 1 of the 2 of split "train" is missing');
});

// ---- .npy ----

test("npy: [N, T] int32 rows are documents; other integer widths; a 1-D stream in pieces", async () => {
  const f = await put(fresh(".npy"), npy("<i4", [3, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]));
  for (const chunkBytes of [1, 20, 1 << 20]) {
    const ds = await docs(f, { chunkBytes });
    assertEquals(ds.map((d) => [...d.ids!]), [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]]);
    assertEquals(lines(ds), [0, 1, 2]);
  }
  const w = await put(fresh(".npy"), npy("<i8", [2, 2], [1n, 2n, 3n, 50256n]));
  assertEquals((await docs(w)).map((d) => [...d.ids!]), [[1, 2], [3, 50256]]);
  const u = await put(fresh(".npy"), npy("<u2", [10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]));
  const pieces = await docs(u, { chunkBytes: 8 });
  assertEquals(pieces.map((d) => [...d.ids!]), [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]);
  assertEquals(pieces.map((d) => d.continues ?? false), [false, true, true]);
  const c = await openCorpus(u, { chunkBytes: 8 });
  for await (const _ of c.documents());
  assertEquals(c.counts().documents, 1);
});

// ---- bad input ----

test("bad input: malformed JSON, missing field, wrong type, names file and line", async () => {
  const f = await put(fresh(".jsonl"), '{"text": "ok"}\n{"text": "broken\n');
  await rejects(docs(f), f, "line 2", "malformed JSON");
  const g = await put(fresh(".jsonl"), '{"text": "ok"}\n{"content": "x", "meta": 1}\n');
  await rejects(docs(g), g, "line 2", 'no field "text"', '"content", "meta"');
  const h = await put(fresh(".jsonl"), '{"text": 5}\n');
  await rejects(docs(h), h, "line 1", 'field "text" is number');
  const i = await put(fresh(".jsonl"), "[1, 2]\n");
  await rejects(docs(i), i, "line 1", "found an array");
  const j = await put(fresh(".jsonl"), '{"text": [1, -2]}\n');
  await rejects(docs(j), j, "line 1", "element 1 is -2, not a token id");
});

test("bad input: invalid UTF-8 names the line and the byte, in text, JSON lines and Parquet", async () => {
  const bad = new Uint8Array([...ids("good\n\nstill good\nbad "), 0xc3, 0x28, ...ids("\n")]);
  const f = await put(fresh(".txt"), bad);
  await rejects(docs(f), f, "line 4", "invalid UTF-8 at byte 4 of the line", "0xc3 0x28");
  await rejects(docs(f, { chunkBytes: 3 }), f, "line 4", "invalid UTF-8");
  // A sequence cut off by the end of the file, and an overlong encoding.
  const cutOff = await put(fresh(".txt"), new Uint8Array([...ids("ab"), 0xe4, 0xb8]));
  await rejects(docs(cutOff), cutOff, "line 1", "invalid UTF-8 at byte 2");
  const overlong = await put(
    fresh(".jsonl"),
    new Uint8Array([...ids('{"text": "'), 0xc0, 0xaf, ...ids('"}')]),
  );
  await rejects(docs(overlong), overlong, "line 1", "invalid UTF-8 at byte 10");
  const p = await put(
    fresh(".parquet"),
    parquet([{
      name: "text",
      data: [ids("fine"), [0xff, 0x41]].map((b) => Uint8Array.from(b)),
      type: "BYTE_ARRAY",
    }]),
  );
  await rejects(docs(p), p, "row 1", "invalid UTF-8 at byte 0");
});

test("bad input: a Parquet file without the column lists the columns it has", async () => {
  const f = await put(
    fresh(".parquet"),
    parquet([{ name: "content", data: ["a"], type: "STRING" }, {
      name: "n",
      data: [1],
      type: "INT32",
    }]),
  );
  await rejects(docs(f), f, 'no column "text"', '"content" (BYTE_ARRAY', '"n" (INT32)');
  await rejects(docs(f, { field: "n" }), f, 'column "n" is INT32');
  const notParquet = await put(fresh(".parquet"), "hello");
  await rejects(docs(notParquet), notParquet, "not a readable Parquet file");
});

test("bad input: empty corpora, unknown formats, bad .npy", async () => {
  const blank = await put(fresh(".txt"), "\n\n  \n");
  await rejects(docs(blank), blank, "empty corpus: no documents in 1 file");
  const empties = await put(fresh(".jsonl"), '{"text": ""}\n{"text": ""}\n');
  await rejects(docs(empties), empties, "empty corpus", "(2 empty skipped)");
  const none = join(dir, "nothing");
  await mkdir(none);
  await put("nothing/notes.md", "x");
  await rejects(openCorpus(none), none, "empty corpus: no", "notes.md");
  const mixed = join(dir, "mixed");
  await put("mixed/a.txt", "x");
  await put("mixed/b.jsonl", '{"text": "y"}');
  await rejects(openCorpus(mixed), mixed, "mixes formats", "give the format option");
  assertEquals(texts(await docs(mixed, { format: "jsonl" })), ["y"]);
  const odd = await put(fresh(".csv"), "x");
  await rejects(openCorpus(odd), odd, "unknown extension");
  assertEquals(texts(await docs(odd, { format: "text" })), ["x"]);
  await rejects(openCorpus(join(dir, "absent.txt")), "absent.txt", "cannot open");
  const floats = await put(fresh(".npy"), npy("<f4", [2], [1, 2]));
  await rejects(docs(floats), floats, "dtype '<f4' is not integer");
  const negative = await put(fresh(".npy"), npy("<i4", [2, 2], [1, 2, -1, 4]));
  await rejects(docs(negative), negative, "row 1, column 0", "-1 is not a token id");
  const big = await put(fresh(".npy"), npy("<i8", [2], [1n, 1n << 40n]));
  await rejects(docs(big), big, "element 1", "1099511627776 is not a token id");
  const short = await put(fresh(".npy"), npy("<i4", [2, 2], [1, 2, 3, 4]).subarray(0, 140));
  await rejects(docs(short), short, "needs");
  const notNpy = await put(fresh(".npy"), "not numpy at all");
  await rejects(docs(notNpy), notNpy, "not an npy file");
});

// ---- packing ----

const textCorpus = async (...documents: string[]) =>
  openCorpus(
    await put(fresh(".jsonl"), documents.map((text) => JSON.stringify({ text })).join("\n")),
  );

test("pack with BOS (SAELens prepend_bos): BOS starts every row and separates documents", async () => {
  const c = await textCorpus("abc", "de", "fghij");
  const [a, b, cc, d, e, f, g, h] = ids("abcdefgh");
  assertEquals(
    await rows(c, byteTokenizer(true), { context: 4 }),
    expectRows([BOS, a, b, cc], [BOS, d, e, BOS], [BOS, f, g, h]),
  );
  // The last partial row ([BOS, i, j]) is dropped, or padded on request.
  const padded = await rows(c, byteTokenizer(true), { context: 4, padLast: true });
  assertEquals(padded[3], { ids: [BOS, ...ids("ij"), PAD], index: 3, length: 3 });
});

test("pack without BOS (GPT-2, Pythia): EOS between documents, none at row starts", async () => {
  const c = await textCorpus("abc", "de", "fghij");
  const [a, b, cc, d, e, f, g, h, i, j] = ids("abcdefghij");
  const stream = tokenRows(c, byteTokenizer(false), { context: 4 });
  const got: TokenRow[] = [];
  for await (const r of stream.rows()) got.push(r);
  assertEquals(
    got.map((r) => [...r.ids]),
    [[a, b, cc, EOS], [d, e, EOS, f], [g, h, i, j]],
  );
  assertEquals(stream.counts(), { documents: 3, tokens: 12, rows: 3, padded: 0, droppedShort: 0 });
  assert(
    stream.describe().startsWith(
      "pack 4 (row start none, separator 257, document start none) of jsonl ",
    ),
  );
  // No separator at all, and an explicit id.
  assertEquals(
    (await rows(c, byteTokenizer(false), { context: 5, separator: null })).map((r) => r.ids),
    [
      ids("abcde"),
      ids("fghij"),
    ],
  );
  assertEquals((await rows(c, byteTokenizer(false), { context: 5, separator: 7 }))[0].ids, [
    a,
    b,
    cc,
    7,
    d,
  ]);
});

test("pack: begin-document tokens, tokens already present not doubled, rows continuing a document", async () => {
  const c = await textCorpus("ab", "cd");
  const [a, b, cc, d] = ids("abcd");
  // Separator and begin-document both before "cd"; they fill the row, "cd" continues the next.
  assertEquals(
    await rows(c, byteTokenizer(false), {
      context: 5,
      beginDocument: "bos",
      separator: "eos",
      padLast: true,
    }),
    expectRows([BOS, a, b, EOS, BOS], short([cc, d, PAD, PAD, PAD], 2)),
  );
  // Documents that begin with BOS get no second one, at a row start or after another document.
  const own = await textCorpus("\x02ab", "\x02cd", "ef");
  const [e, f] = ids("ef");
  assertEquals(
    await rows(own, byteTokenizer(true), { context: 3 }),
    expectRows([BOS, a, b], [BOS, cc, d], [BOS, e, f]),
  );
  assertEquals(
    await rows(own, byteTokenizer(true), { context: 4 }),
    expectRows([BOS, a, b, BOS], [BOS, cc, d, BOS]),
  );
  // The separator is the BOS here: a document starting with it gets no extra one.
  assertEquals((await rows(own, byteTokenizer(true), { context: 6 }))[0].ids, [
    BOS,
    a,
    b,
    BOS,
    cc,
    d,
  ]);
});

test("truncate (dictionary_learning): one document per row, BOS first, padding with a length", async () => {
  const c = await textCorpus("abcdef", "xy", "pqrs");
  const [a, b, cc, d] = ids("abcd");
  const [x, y] = ids("xy");
  const [p, q, r] = ids("pqr");
  assertEquals(
    await rows(c, byteTokenizer(true), { context: 4, mode: "truncate" }),
    expectRows([BOS, a, b, cc], short([BOS, x, y, PAD], 3), [BOS, p, q, r]),
  );
  assertEquals(
    await rows(c, byteTokenizer(false), { context: 4, mode: "truncate", padId: 0 }),
    expectRows([a, b, cc, d], short([x, y, 0, 0], 2), [p, q, r, ids("s")[0]]),
  );
  const stream = tokenRows(c, byteTokenizer(true), {
    context: 4,
    mode: "truncate",
    dropShort: true,
  });
  const kept: number[][] = [];
  for await (const row of stream.rows()) kept.push([...row.ids]);
  assertEquals(kept, [[BOS, a, b, cc], [BOS, p, q, r]]);
  assertEquals(stream.counts().droppedShort, 1);
  assert(stream.describe().startsWith("truncate 4 (BOS 256, short documents dropped) of jsonl "));
});

test("pre-tokenised ids pass through unchanged: no BOS or separators added", async () => {
  const values = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
  const c = await openCorpus(await put(fresh(".npy"), npy("<i4", [3, 4], values)));
  const expected = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]];
  for (const mode of ["pack", "truncate"] as const) {
    assertEquals(
      (await rows(c, byteTokenizer(true), { context: 4, mode })).map((r) => r.ids),
      expected,
    );
  }
  assertEquals((await rows(c, byteTokenizer(true), { context: 5 })).map((r) => r.ids), [
    [1, 2, 3, 4, 5],
    [6, 7, 8, 9, 10],
  ]);
  // A 1-D stream read in pieces is one document: packed seamlessly, truncated once.
  const s = await openCorpus(
    await put(fresh(".npy"), npy("<i4", [10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])),
    {
      chunkBytes: 8,
    },
  );
  assertEquals((await rows(s, byteTokenizer(true), { context: 3 })).map((r) => r.ids), [[0, 1, 2], [
    3,
    4,
    5,
  ], [6, 7, 8]]);
  assertEquals(
    await rows(s, byteTokenizer(true), { context: 3, mode: "truncate" }),
    expectRows([0, 1, 2]),
  );
});

test("rows are deterministic and restartable; counts follow the latest pass", async () => {
  const f = await put(
    fresh(".txt"),
    Array.from({ length: 200 }, (_, i) => `document ${i} ` + "é".repeat(i % 13)).join("\n\n"),
  );
  const stream = tokenRows(await openCorpus(f, { chunkBytes: 64 }), byteTokenizer(true), {
    context: 16,
  });
  const pass = async () => {
    const out: number[][] = [];
    for await (const r of stream.rows()) out.push([...r.ids, r.index]);
    return out;
  };
  const first = await pass();
  const second = await pass();
  assert(first.length > 50);
  assertEquals(second, first);
  assertEquals(stream.counts().rows, first.length);
  // A pass stopped early and a new one started give the same prefix.
  for await (const r of stream.rows()) if (r.index === 3) break;
  assertEquals((await pass()).slice(0, 4), first.slice(0, 4));
});

test("options are checked", async () => {
  const c = await textCorpus("a");
  const fails = (fn: () => unknown, fragment: string) => {
    try {
      fn();
    } catch (e) {
      assert(String((e as Error).message).includes(fragment), (e as Error).message);
      return;
    }
    throw new Error(`expected an error mentioning ${fragment}`);
  };
  fails(
    () => tokenRows(c, byteTokenizer(true), { context: 0 }),
    "context must be a positive integer",
  );
  fails(
    () => tokenRows(c, byteTokenizer(true, false), { context: 4 }),
    'prependBos is "bos" but the tokenizer has no BOS',
  );
  fails(
    () => tokenRows(c, byteTokenizer(false), { context: 4, separator: -1 }),
    "separator must be a token id",
  );
  // deno-lint-ignore no-explicit-any
  fails(
    () => tokenRows(c, byteTokenizer(false), { context: 4, mode: "slide" as any }),
    'mode must be "pack" or "truncate"',
  );
  // Without special tokens the default is no separator and padding with 0.
  assertEquals(
    await rows(await textCorpus("ab", "c"), byteTokenizer(false, false), {
      context: 4,
      padLast: true,
    }),
    expectRows(short([...ids("abc"), 0], 3)),
  );
});

test("cleanup", async () => {
  await rm(dir, { recursive: true, force: true });
});
