/**
 * Parquet files (a single file or a Hugging Face datasets folder of shards), read through
 * hyparquet one row group at a time: memory holds one group's column, never the whole file.
 * `field` names the column: a string column gives texts (decoded here, strictly, so invalid UTF-8
 * names its row), a list-of-integers column gives pre-tokenised ids; a null is an empty document.
 * Snappy is built into hyparquet; Zstandard (fzstd) and gzip (node:zlib) are added here.
 */
import { open } from "node:fs/promises";
import { gunzipSync } from "node:zlib";
import { decompress as zstdDecompress } from "fzstd";
import {
  type AsyncBuffer,
  type Compressors,
  type FileMetaData,
  parquetMetadataAsync,
  parquetRead,
  parquetSchema,
  type SchemaTree,
} from "hyparquet";
import type { CorpusDocument } from "./corpus.ts";
import { CorpusError } from "./corpus_error.ts";
import { decodeUtf8 } from "./file_chunks.ts";
import { tokenIds } from "./token_ids.ts";

const COMPRESSORS: Compressors = {
  ZSTD: (input, outputLength) => zstdDecompress(input, new Uint8Array(outputLength)),
  GZIP: (input) => new Uint8Array(gunzipSync(input)),
};

/** A column's type as a person reads it: `BYTE_ARRAY (STRING)`, `list<INT32>`. */
function columnType(t: SchemaTree): string {
  const e = t.element;
  const logical = e.logical_type?.type ?? e.converted_type;
  if (t.children.length === 0) return logical ? `${e.type} (${logical})` : String(e.type);
  if (logical === "LIST") {
    let leaf = t;
    while (leaf.children.length === 1) leaf = leaf.children[0];
    return leaf.children.length === 0 ? `list<${leaf.element.type}>` : "list<struct>";
  }
  return logical ? String(logical) : "struct";
}

/** A whole-file-free view of a local file for hyparquet: each slice is one positioned read. */
async function fileBuffer(path: string): Promise<AsyncBuffer & { close(): Promise<void> }> {
  const handle = await open(path, "r");
  const { size } = await handle.stat();
  return {
    byteLength: size,
    async slice(start: number, end = size) {
      const buf = new Uint8Array(end - start);
      let got = 0;
      while (got < buf.length) {
        const { bytesRead } = await handle.read(buf, got, buf.length - got, start + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return buf.buffer;
    },
    close: () => handle.close(),
  };
}

export async function* parquetDocuments(
  file: string,
  field: string,
): AsyncGenerator<CorpusDocument> {
  const buffer = await fileBuffer(file);
  try {
    let metadata: FileMetaData;
    try {
      metadata = await parquetMetadataAsync(buffer);
    } catch (e) {
      throw new CorpusError(file, null, `not a readable Parquet file: ${(e as Error).message}`);
    }
    const columns = parquetSchema(metadata).children;
    const column = columns.find((c) => c.element.name === field);
    if (column === undefined) {
      throw new CorpusError(
        file,
        null,
        `no column ${JSON.stringify(field)}; its columns are ${
          columns.map((c) => `${JSON.stringify(c.element.name)} (${columnType(c)})`).join(", ")
        } (choose one with the field option)`,
      );
    }
    const type = columnType(column);
    const annotation = column.element.logical_type?.type ?? column.element.converted_type;
    const isText = column.children.length === 0 && column.element.type === "BYTE_ARRAY" &&
      (annotation === undefined || annotation === "STRING" || annotation === "UTF8");
    const isIds = /^list<INT(32|64)>$/.test(type);
    if (!isText && !isIds) {
      throw new CorpusError(
        file,
        null,
        `column ${
          JSON.stringify(field)
        } is ${type}; expected text (BYTE_ARRAY) or token ids (a list of INT32 or INT64)`,
      );
    }
    let groupStart = 0;
    for (const group of metadata.row_groups) {
      const groupEnd = groupStart + Number(group.num_rows);
      let rows: unknown[][] = [];
      try {
        await parquetRead({
          file: buffer,
          metadata,
          columns: [field],
          rowStart: groupStart,
          rowEnd: groupEnd,
          compressors: COMPRESSORS,
          utf8: false,
          onComplete: (r) => void (rows = r),
        });
      } catch (e) {
        throw new CorpusError(
          file,
          `rows ${groupStart}..${groupEnd}`,
          `cannot read column ${JSON.stringify(field)}: ${(e as Error).message}`,
        );
      }
      for (let i = 0; i < rows.length; i++) {
        const row = groupStart + i;
        const v = rows[i][0];
        if (v === null || v === undefined) yield { text: "", file, line: row };
        else if (isText) {
          const bytes = typeof v === "string" ? new TextEncoder().encode(v) : v as Uint8Array;
          const d = decodeUtf8(bytes);
          if ("badByte" in d) {
            throw new CorpusError(
              file,
              `row ${row}`,
              `invalid UTF-8 at byte ${d.badByte} of ${field}`,
            );
          }
          yield { text: d.text, file, line: row };
        } else {
          const ids = tokenIds(
            v as ArrayLike<unknown>,
            (msg) => new CorpusError(file, `row ${row}`, `${field}: ${msg}`),
          );
          yield { ids, file, line: row };
        }
      }
      rows = [];
      groupStart = groupEnd;
    }
  } finally {
    await buffer.close();
  }
}
