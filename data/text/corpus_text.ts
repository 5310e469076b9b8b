/**
 * Plain text files as documents. Lines end at "\n" or "\r\n"; a document's text is its lines
 * joined by "\n". Where one document ends and the next begins is the separator's choice:
 * - "blank" (default): one or more blank (whitespace-only) lines separate documents, as
 *   paragraphs or articles are in most text dumps; a file's end also ends a document.
 * - "line": every line is a document (an empty line is an empty document, skipped and counted).
 * - "file": each file is one document (it must fit in `maxDocumentBytes`).
 * - any other string: a line equal to it separates documents (e.g. "<|endoftext|>"); two such
 *   lines in a row enclose an empty document.
 */
import type { CorpusDocument } from "./corpus.ts";
import { CorpusError } from "./corpus_error.ts";
import { contentChunks, decodeUtf8, type LineBlock, lineBlocks } from "./file_chunks.ts";

export interface LineReadOptions {
  chunkBytes: number;
  maxDocumentBytes: number;
}

/** Decoded lines of one block: their texts, byte lengths and the first one's 1-based number. */
export interface TextLines {
  texts: string[];
  bytes: number[];
  firstLine: number;
}

/**
 * The file's lines, decoded strictly as UTF-8 a block at a time; "\r\n" ends a line as "\n"
 * does, and a byte-order mark at the start is dropped. Errors name the file and the line.
 */
export async function* textLines(file: string, opts: LineReadOptions): AsyncGenerator<TextLines> {
  const chunks = contentChunks(
    file,
    opts.chunkBytes,
    (msg) => new CorpusError(file, null, msg),
  );
  const blocks = lineBlocks(
    chunks,
    opts.maxDocumentBytes,
    (line) =>
      new CorpusError(
        file,
        `line ${line}`,
        `line longer than maxDocumentBytes = ${opts.maxDocumentBytes} bytes`,
      ),
  );
  for await (const block of blocks) {
    const d = decodeUtf8(block.bytes);
    if ("badByte" in d) throw invalidUtf8(file, block);
    const texts = d.text.split("\n");
    if (texts.length > block.lineBytes.length) texts.pop(); // the "" after the final "\n"
    for (let i = 0; i < texts.length; i++) {
      const t = texts[i];
      if (t.charCodeAt(t.length - 1) === 13) texts[i] = t.slice(0, -1);
    }
    if (block.firstLine === 1 && texts[0].charCodeAt(0) === 0xfeff) texts[0] = texts[0].slice(1);
    yield { texts, bytes: block.lineBytes, firstLine: block.firstLine };
  }
}

/** The error for a block that failed to decode: which line, which byte, which bytes. */
function invalidUtf8(file: string, block: LineBlock): CorpusError {
  let at = 0;
  for (let i = 0; i < block.lineBytes.length; i++) {
    const bytes = block.bytes.subarray(at, at + block.lineBytes[i]);
    const d = decodeUtf8(bytes);
    if ("badByte" in d) {
      const b = d.badByte;
      return new CorpusError(
        file,
        `line ${block.firstLine + i}`,
        `invalid UTF-8 at byte ${b} of the line (bytes ${
          [...bytes.subarray(b, b + 4)].map((x) => "0x" + x.toString(16).padStart(2, "0")).join(" ")
        })`,
      );
    }
    at += block.lineBytes[i] + 1;
  }
  return new CorpusError(file, `line ${block.firstLine}`, "invalid UTF-8");
}

/** Documents of one text file; empty ones are yielded too (the caller skips and counts them). */
export async function* textDocuments(
  file: string,
  separator: string,
  opts: LineReadOptions,
): AsyncGenerator<CorpusDocument> {
  let parts: string[] = [];
  let bytes = 0;
  let first = 0;
  const flush = (): CorpusDocument => {
    const doc = { text: parts.join("\n"), file, line: first };
    parts = [];
    bytes = 0;
    return doc;
  };
  const add = (text: string, line: number, lineBytes: number) => {
    if (parts.length === 0) first = line;
    bytes += lineBytes + 1;
    if (bytes > opts.maxDocumentBytes) {
      throw new CorpusError(
        file,
        `line ${first}`,
        `the document starting here is longer than maxDocumentBytes = ${opts.maxDocumentBytes}; ` +
          `choose a separator that splits it (now ${JSON.stringify(separator)})`,
      );
    }
    parts.push(text);
  };
  let markerSeen = false;
  for await (const block of textLines(file, opts)) {
    for (let i = 0; i < block.texts.length; i++) {
      const text = block.texts[i], line = block.firstLine + i, n = block.bytes[i];
      if (separator === "line") {
        yield { text, file, line };
      } else if (separator === "blank") {
        if (/^\s*$/.test(text)) {
          if (parts.length > 0) yield flush();
        } else add(text, line, n);
      } else if (separator === "file") {
        add(text, line, n);
      } else if (text === separator) {
        // A marker ends the document before it; two markers in a row enclose an empty one.
        if (parts.length > 0 || markerSeen) {
          if (parts.length === 0) first = line;
          yield flush();
        }
        markerSeen = true;
      } else add(text, line, n);
    }
  }
  if (parts.length > 0) yield flush();
  else if (separator === "file") yield { text: "", file, line: 1 };
}
