/** Text to token rows: tokenizers, corpora, packing. Re-exports only. */
export {
  type Corpus,
  type CorpusCounts,
  type CorpusDocument,
  CorpusError,
  type CorpusFormat,
  type CorpusOptions,
  type FileCorpus,
  openCorpus,
} from "./corpus.ts";
export {
  type CountedTokenRowStream,
  type SpecialToken,
  type TokenRow,
  type TokenRowCounts,
  type TokenRowOptions,
  tokenRows,
  type TokenRowStream,
} from "./token_rows.ts";
