/** Text to token rows: tokenizers, corpora, packing, and --data for model commands. Re-exports only. */
export * from "./tokenizer.ts";
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
export { idRows, type IdRowsOptions } from "./id_rows.ts";
export { openTextRows, type TextRows, type TextRowsOptions } from "./open_rows.ts";
export { TOKENIZE_HELP, tokenizeCommand } from "./commands.ts";
