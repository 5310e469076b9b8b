/**
 * Text to token rows: tokenizers (loading them, and training byte-level BPE), corpora, packing, and
 * --data for model commands. Re-exports only.
 */
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
export {
  type BpeResult,
  BpeTrainError,
  type BpeTrainOptions,
  trainBpe,
  trainBpeCounts,
} from "./bpe_train.ts";
export { countDocuments, countWords, newWordCounts, type WordCounts } from "./bpe_words.ts";
export {
  bpeTokenizerConfig,
  bpeTokenizerJson,
  type BpeTokenizerOptions,
  writeBpeTokenizer,
} from "./bpe_json.ts";
export { BYTE_CHARS, BYTE_PIECES, byteLevel, fromByteLevel, GPT2_SPLIT } from "./byte_level.ts";
export { assertSameTokenizer } from "./tokenizer_match.ts";
