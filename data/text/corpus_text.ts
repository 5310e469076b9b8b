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
import { byteLines, contentChunks, decodeUtf8 } from "./file_chunks.ts";

export interface LineReadOptions {
  chunkBytes: number;
  maxDocumentBytes: number;
}

/** The file's lines, decoded strictly as UTF-8, with their 1-based numbers; errors name both. */
export async function* textLines(
  file: string,
  opts: LineReadOptions,
): AsyncGenerator<{ text: string; line: number; bytes: number }> {
  const chunks = contentChunks(
    file,
    opts.chunkBytes,
    (msg) => new CorpusError(file, null, msg),
  );
  const lines = byteLines(
    chunks,
    opts.maxDocumentBytes,
    (line) =>
      new CorpusError(
        file,
        `line ${line}`,
        `line longer than maxDocumentBytes = ${opts.maxDocumentBytes} bytes`,
      ),
  );
  let line = 0;
  for await (const bytes of lines) {
    line++;
    const d = decodeUtf8(bytes);
    if ("badByte" in d) {
      const b = d.badByte;
      throw new CorpusError(
        file,
        `line ${line}`,
        `invalid UTF-8 at byte ${b} of the line (bytes ${
          [...bytes.subarray(b, b + 4)].map((x) => "0x" + x.toString(16).padStart(2, "0")).join(" ")
        })`,
      );
    }
    let text = d.text;
    if (line === 1 && text.charCodeAt(0) === 0xfeff) text = text.slice(1); // a byte-order mark
    if (text.endsWith("\r")) text = text.slice(0, -1);
    yield { text, line, bytes: bytes.length };
  }
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
  for await (const { text, line, bytes: n } of textLines(file, opts)) {
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
  if (parts.length > 0) yield flush();
  else if (separator === "file") yield { text: "", file, line: 1 };
}
