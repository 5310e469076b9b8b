/**
 * A text corpus: a stream of documents from plain text, JSON lines (optionally zstd), Parquet or
 * pre-tokenised ids, read with bounded memory.
 */

export interface CorpusDocument {
  /** The document's text; absent for pre-tokenised input, which gives `ids`. */
  text?: string;
  ids?: Int32Array;
  /** Where it came from, for errors and provenance: the file and its 1-based line or 0-based row. */
  file: string;
  line: number;
}

export interface Corpus {
  /** A fresh pass from the first document (restartable: each call starts over). */
  documents(): AsyncIterable<CorpusDocument>;
  /** One line for logs and store metadata (path, format, field). */
  describe(): string;
}
