/**
 * A tokenizer as the rest of the library sees it: text to ids and back, and which ids are special.
 * Loaded from a Hugging Face `tokenizer.json` (+ `tokenizer_config.json`).
 */

export interface Tokenizer {
  /** Ids the tokenizer can produce (the model's embedding may have more rows: padding). */
  readonly vocabSize: number;
  /** Beginning/end-of-sequence and padding ids, null where the tokenizer has none. */
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly padId: number | null;
  /** Whether the model expects BOS before each sequence (Llama, Gemma: yes; GPT-2, Pythia: no). */
  readonly addBos: boolean;
  /** Ids of added special tokens (BOS, EOS, padding, `<|endoftext|>`, …): excluded on request. */
  readonly specialIds: ReadonlySet<number>;
  /** The ids of `text`, with no special tokens added. */
  encode(text: string): Int32Array;
  /** The text of `ids` (special tokens included as their text). */
  decode(ids: ArrayLike<number>): string;
  /** One id's piece as the vocabulary spells it (`Ġthe`, `▁the`, `<0x0A>`). */
  piece(id: number): string;
}
