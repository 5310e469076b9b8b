/**
 * A text corpus: a stream of documents from plain text, JSON lines (optionally zstd), Parquet or
 * pre-tokenised ids, read with bounded memory.
 */
import { readdir, stat } from "node:fs/promises";
import { basename, join, relative } from "node:path";
import { CorpusError } from "./corpus_error.ts";
import { DEFAULT_CHUNK_BYTES } from "./file_chunks.ts";
import { jsonlDocuments } from "./corpus_jsonl.ts";
import { npyDocuments } from "./corpus_npy.ts";
import { parquetDocuments } from "./corpus_parquet.ts";
import { textDocuments } from "./corpus_text.ts";

export { CorpusError };

export interface CorpusDocument {
  /** The document's text; absent for pre-tokenised input, which gives `ids`. */
  text?: string;
  ids?: Int32Array;
  /** Where it came from, for errors and provenance: the file and its 1-based line or 0-based row. */
  file: string;
  line: number;
  /**
   * This piece continues the previous document (a 1-D stream of ids read in pieces): no separator
   * goes between them, and a one-document-per-row reader treats them as one document.
   */
  continues?: boolean;
  /** The value of the `labelField` option (e.g. a JSON line's `domain`), when one is asked for. */
  label?: string;
}

export interface Corpus {
  /** A fresh pass from the first document (restartable: each call starts over). */
  documents(): AsyncIterable<CorpusDocument>;
  /** One line for logs and store metadata (path, format, field). */
  describe(): string;
}

export type CorpusFormat = "text" | "jsonl" | "parquet" | "npy";

export interface CorpusOptions {
  /** The file format; by default from the extension(s): .txt, .jsonl (.zst), .parquet, .npy. */
  format?: CorpusFormat;
  /** JSON lines and Parquet: the field or column holding the text (or the token ids). Default "text". */
  field?: string;
  /**
   * Plain text: how documents are split. "blank" (default): blank lines separate documents;
   * "line": one document per line; "file": one document per file; any other string: a line equal
   * to it separates documents (e.g. "<|endoftext|>").
   */
  separator?: string;
  /**
   * JSON lines: a field carried along as each document's `label` (e.g. "domain"), so that what is
   * computed on the text can be reported per label. Every record must have it (a string or number).
   */
  labelField?: string;
  /** A Hugging Face datasets folder with several splits (`train-00000-of-00002.parquet`): which. Default "train". */
  split?: string;
  /** Bytes per read (default 1 MiB). Tests set it tiny to exercise chunk boundaries. */
  chunkBytes?: number;
  /** The longest line or document accepted, in bytes (default 64 MiB): memory stays bounded. */
  maxDocumentBytes?: number;
}

/** What the current (or last) pass has read. */
export interface CorpusCounts {
  /** Non-empty documents yielded. */
  documents: number;
  /** Documents with no text (or no ids), skipped. */
  emptySkipped: number;
  /** Files opened so far. */
  files: number;
}

/** A corpus opened from files; `counts()` describes the pass in progress or the last one. */
export interface FileCorpus extends Corpus {
  readonly format: CorpusFormat;
  /** The files read, in order. */
  readonly files: readonly string[];
  counts(): CorpusCounts;
}

const EXTENSIONS: Record<CorpusFormat, readonly string[]> = {
  text: [".txt", ".txt.zst", ".txt.zstd"],
  jsonl: [".jsonl", ".jsonl.zst", ".jsonl.zstd", ".ndjson"],
  parquet: [".parquet"],
  npy: [".npy"],
};

function formatOf(name: string): CorpusFormat | null {
  const lower = name.toLowerCase();
  for (const [format, exts] of Object.entries(EXTENSIONS)) {
    if (exts.some((e) => lower.endsWith(e))) return format as CorpusFormat;
  }
  return null;
}

const KNOWN = Object.values(EXTENSIONS).flat().join(", ");

/** All files under a folder (hidden ones excluded), as sorted relative paths: a fixed order. */
async function listFiles(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      if (e.name.startsWith(".")) continue;
      const full = join(dir, e.name);
      if (e.isDirectory()) await walk(full);
      else out.push(relative(root, full));
    }
  };
  await walk(root);
  // Code-unit order, not locale order: the same on every machine (shard numbers are zero-padded).
  return out.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

const SHARD = /^(.+?)-(\d{5})-of-(\d{5})(?:-[0-9a-f]+)?\./;

/**
 * Hugging Face shard names (`train-00000-of-00002.parquet`): keep the chosen split's shards, and
 * check that none is missing. Files not named that way are all kept.
 */
function selectSplit(root: string, files: string[], split: string | undefined): string[] {
  const shards = new Map<string, { file: string; index: number; of: number }[]>();
  for (const f of files) {
    const m = SHARD.exec(basename(f));
    if (m) {
      const list = shards.get(m[1]) ?? [];
      list.push({ file: f, index: Number(m[2]), of: Number(m[3]) });
      shards.set(m[1], list);
    }
  }
  if (shards.size === 0) {
    if (split !== undefined) {
      throw new CorpusError(
        root,
        null,
        `split ${JSON.stringify(split)} asked for, but no file is named <split>-NNNNN-of-NNNNN`,
      );
    }
    return files;
  }
  const chosen = split ?? (shards.size === 1 ? [...shards.keys()][0] : "train");
  const list = shards.get(chosen);
  if (list === undefined) {
    throw new CorpusError(
      root,
      null,
      `no split ${JSON.stringify(chosen)}; the shards are of splits ${
        [...shards.keys()].map((s) => JSON.stringify(s)).join(", ")
      } (choose one with the split option)`,
    );
  }
  const of = list[0].of;
  const have = new Set(list.map((s) => s.index));
  for (let i = 0; i < of; i++) {
    if (!have.has(i)) {
      throw new CorpusError(
        root,
        null,
        `shard ${i} of the ${of} of split ${
          JSON.stringify(chosen)
        } is missing (${list.length} found)`,
      );
    }
  }
  const keep = new Set(list.map((s) => s.file));
  return files.filter((f) => keep.has(f) || !SHARD.test(basename(f)));
}

/** The files to read and their format, from a file or a folder path. */
async function resolveFiles(
  path: string,
  opts: CorpusOptions,
): Promise<{ format: CorpusFormat; files: string[] }> {
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (e) {
    throw new CorpusError(path, null, `cannot open: ${(e as Error).message}`);
  }
  if (!isDir) {
    const format = opts.format ?? formatOf(path);
    if (format === null) {
      throw new CorpusError(
        path,
        null,
        `unknown extension; expected one of ${KNOWN}, or give the format option`,
      );
    }
    return { format, files: [path] };
  }
  const all = await listFiles(path);
  const byFormat = new Map<CorpusFormat, string[]>();
  for (const f of all) {
    const fmt = formatOf(f);
    if (fmt !== null) byFormat.set(fmt, [...(byFormat.get(fmt) ?? []), f]);
  }
  let format = opts.format;
  if (format === undefined) {
    if (byFormat.size > 1) {
      throw new CorpusError(
        path,
        null,
        `the folder mixes formats (${
          [...byFormat].map(([f, l]) => `${l.length} ${f}`).join(", ")
        }); give the format option`,
      );
    }
    format = [...byFormat.keys()][0];
  }
  const files = format === undefined ? [] : byFormat.get(format) ?? [];
  if (files.length === 0) {
    throw new CorpusError(
      path,
      null,
      `empty corpus: no ${
        format === undefined ? KNOWN : EXTENSIONS[format].join(", ")
      } files in the folder${
        all.length > 0
          ? ` (it has ${all.slice(0, 5).join(", ")}${all.length > 5 ? ", …" : ""})`
          : ""
      }`,
    );
  }
  const chosen = selectSplit(path, files, opts.split);
  return { format, files: chosen.map((f) => join(path, f)) };
}

/**
 * Open a file or a folder of files as a corpus. Files are read in sorted path order; each pass
 * (`documents()`) starts again from the first. Empty documents are skipped and counted; a pass
 * that finds no document at all throws "empty corpus". Every bad-input error is a CorpusError
 * naming the file and the line (text, JSON lines) or row (Parquet, .npy).
 */
export async function openCorpus(path: string, opts: CorpusOptions = {}): Promise<FileCorpus> {
  const separator = opts.separator ?? "blank";
  const field = opts.field ?? "text";
  const chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  const maxDocumentBytes = opts.maxDocumentBytes ?? 64 << 20;
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1) {
    throw new RangeError(`openCorpus: chunkBytes must be a positive integer, got ${chunkBytes}`);
  }
  if (separator === "") throw new RangeError(`openCorpus: separator must not be empty`);
  const { format, files } = await resolveFiles(path, opts);
  if (opts.labelField !== undefined && format !== "jsonl") {
    throw new CorpusError(
      path,
      null,
      `a label field (${
        JSON.stringify(opts.labelField)
      }) is read from JSON lines only, not ${format}`,
    );
  }
  const lineOpts = { chunkBytes, maxDocumentBytes };
  const read = (file: string): AsyncIterable<CorpusDocument> => {
    switch (format) {
      case "text":
        return textDocuments(file, separator, lineOpts);
      case "jsonl":
        return jsonlDocuments(file, field, lineOpts, opts.labelField);
      case "parquet":
        return parquetDocuments(file, field);
      case "npy":
        return npyDocuments(file, chunkBytes);
    }
  };
  let counts: CorpusCounts = { documents: 0, emptySkipped: 0, files: 0 };
  const detail = format === "text"
    ? `separator ${JSON.stringify(separator)}`
    : format === "npy"
    ? "token ids"
    : `field ${JSON.stringify(field)}`;
  return {
    format,
    files,
    counts: () => ({ ...counts }),
    describe: () =>
      `${format} ${path}${files.length > 1 ? ` (${files.length} files)` : ""}, ${detail}`,
    async *documents() {
      const c: CorpusCounts = { documents: 0, emptySkipped: 0, files: 0 };
      counts = c;
      for (const file of files) {
        c.files++;
        for await (const doc of read(file)) {
          const n = doc.ids !== undefined ? doc.ids.length : doc.text!.length;
          // An empty piece of a continued stream is no document of its own.
          if (n === 0) {
            if (!doc.continues) c.emptySkipped++;
            continue;
          }
          if (!doc.continues) c.documents++;
          yield doc;
        }
      }
      if (c.documents === 0) {
        throw new CorpusError(
          path,
          null,
          `empty corpus: no documents in ${files.length} file${files.length > 1 ? "s" : ""}` +
            (c.emptySkipped > 0 ? ` (${c.emptySkipped} empty skipped)` : ""),
        );
      }
    },
  };
}
