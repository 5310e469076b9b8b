/** Text to tokens: tokenizers (and, beside them, corpora and token rows). Re-exports only. */
export * from "./tokenizer.ts";
export type { Corpus, CorpusDocument } from "./corpus.ts";
export type { TokenRow, TokenRowStream } from "./token_rows.ts";
export { TOKENIZE_HELP, tokenizeCommand } from "./commands.ts";
