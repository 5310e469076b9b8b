/**
 * Token rows: a corpus tokenised and cut into fixed-length rows of `context` ids, the unit that
 * harvesting and live activation buffers run the model on.
 *
 * Two ways to make rows:
 * - "pack" (SAELens's `concat_and_batch_sequences`): documents are concatenated, with a separator
 *   token between them, and cut into rows of exactly `context` ids; a document may run on into
 *   the next row. `beginRow` (SAELens's begin_batch_token) is put at position 0 of every row and
 *   `beginDocument` (begin_sequence_token) before each document, each only where the token is not
 *   already there. The last, partial row is dropped (or padded with `padLast`).
 * - "truncate" (dictionary_learning): one document per row, cut to `context` ids (BOS first when
 *   `prependBos`); a shorter document is padded and its row says how many ids are real
 *   (`length`), or skipped with `dropShort` (SAELens's disable_concat_sequences).
 * Pre-tokenised documents (`ids`) are taken as they are: no BOS, separator or begin-document token
 * is added to them (they are assumed to carry their own, as SAELens assumes of pre-tokenised
 * datasets); they are only concatenated and cut, or truncated and padded.
 */
import type { Corpus, CorpusDocument } from "./corpus.ts";
import type { Tokenizer } from "./tokenizer.ts";

export interface TokenRow {
  /** [context] token ids. */
  ids: Int32Array;
  /** This row's number in the stream (0, 1, 2, …): the position a resumed run skips to. */
  index: number;
  /**
   * How many leading ids are real when the rest is padding (a short document in "truncate" mode,
   * the last row with `padLast`); absent when all `context` ids are real. Harvesting drops the rest.
   */
  length?: number;
  /**
   * Which document label (CorpusDocument.label) each position belongs to, when the corpus carries
   * labels: the label of entry k holds from `at` up to the next entry's `at` (pack: a separator or
   * BOS put before a document counts as that document's). Absent for unlabelled corpora.
   */
  segments?: { at: number; label: string }[];
}

/** A restartable stream of rows: each call of `rows()` starts at row 0. */
export interface TokenRowStream {
  rows(): AsyncIterable<TokenRow>;
  readonly context: number;
  describe(): string;
}

/** A special token given by id, or by role: the tokenizer's BOS or EOS. */
export type SpecialToken = number | "bos" | "eos";

export interface TokenRowOptions {
  /** Ids per row (the model's sequence length for harvesting). */
  context: number;
  /** "pack" (default): documents concatenated into full rows; "truncate": one document per row. */
  mode?: "pack" | "truncate";
  /**
   * Put BOS first in every row (pack: at position 0 of each row; truncate: before each
   * document). Default: the tokenizer's `addBos` (Llama, Gemma yes; GPT-2, Pythia no). SAELens's
   * `prepend_bos`; TransformerLens prepends BOS for GPT-2 too, so set it to match an SAE trained so.
   */
  prependBos?: boolean;
  /**
   * Pack: the token put between two documents (SAELens's sequence_separator_token), or null for
   * none. Default "bos" when `prependBos`, otherwise "eos" (GPT-2's and Pythia's `<|endoftext|>`,
   * as they were trained), or none when the tokenizer has no EOS.
   */
  separator?: SpecialToken | null;
  /** Pack: a token put before every document (SAELens's begin_sequence_token). Default none. */
  beginDocument?: SpecialToken | null;
  /** Pack: yield the last, partial row padded (with `length`) instead of dropping it. */
  padLast?: boolean;
  /** Truncate: skip documents shorter than `context` instead of padding them. */
  dropShort?: boolean;
  /** The id that fills padding. Default: the tokenizer's padding id, else EOS, else 0. */
  padId?: number;
}

/** What the current (or last) pass of `rows()` has made. */
export interface TokenRowCounts {
  /** Documents tokenised (pieces of one continued stream count once). */
  documents: number;
  /** Tokens placed in rows, padding excluded (pack: includes inserted BOS and separators). */
  tokens: number;
  rows: number;
  /** Rows with padding. */
  padded: number;
  /** Truncate: documents skipped as shorter than `context` (`dropShort`). */
  droppedShort: number;
}

export interface CountedTokenRowStream extends TokenRowStream {
  counts(): TokenRowCounts;
}

function resolveSpecial(
  tok: Pick<Tokenizer, "bosId" | "eosId">,
  t: SpecialToken | null | undefined,
  what: string,
): number | null {
  if (t === null || t === undefined) return null;
  if (t === "bos" || t === "eos") {
    const id = t === "bos" ? tok.bosId : tok.eosId;
    if (id === null) {
      throw new RangeError(
        `tokenRows: ${what} is "${t}" but the tokenizer has no ${t.toUpperCase()} token; give an id`,
      );
    }
    return id;
  }
  if (!Number.isInteger(t) || t < 0) {
    throw new RangeError(`tokenRows: ${what} must be a token id (an integer ≥ 0), got ${t}`);
  }
  return t;
}

function idsOf(doc: CorpusDocument, tokenizer: Tokenizer): Int32Array {
  return doc.ids ?? tokenizer.encode(doc.text ?? "");
}

/** Tokenise a corpus and cut it into rows of `context` ids (see the file's comment for the rules). */
export function tokenRows(
  corpus: Corpus,
  tokenizer: Tokenizer,
  opts: TokenRowOptions,
): CountedTokenRowStream {
  const context = opts.context;
  if (!Number.isInteger(context) || context < 1) {
    throw new RangeError(`tokenRows: context must be a positive integer, got ${context}`);
  }
  const mode = opts.mode ?? "pack";
  if (mode !== "pack" && mode !== "truncate") {
    throw new RangeError(
      `tokenRows: mode must be "pack" or "truncate", got ${JSON.stringify(mode)}`,
    );
  }
  const prependBos = opts.prependBos ?? tokenizer.addBos;
  const bos = prependBos ? resolveSpecial(tokenizer, "bos", "prependBos") : null;
  const separator = resolveSpecial(
    tokenizer,
    opts.separator !== undefined
      ? opts.separator
      : prependBos
      ? "bos"
      : tokenizer.eosId !== null
      ? "eos"
      : null,
    "separator",
  );
  const beginDocument = resolveSpecial(tokenizer, opts.beginDocument, "beginDocument");
  const padId = opts.padId ?? tokenizer.padId ?? tokenizer.eosId ?? 0;
  if (!Number.isInteger(padId) || padId < 0) {
    throw new RangeError(`tokenRows: padId must be a token id (an integer ≥ 0), got ${padId}`);
  }
  let counts: TokenRowCounts = { documents: 0, tokens: 0, rows: 0, padded: 0, droppedShort: 0 };

  const show = (v: number | null) => (v === null ? "none" : String(v));
  const describe = () =>
    mode === "pack"
      ? `pack ${context} (row start ${show(bos)}, separator ${show(separator)}, document start ${
        show(beginDocument)
      }) of ${corpus.describe()}`
      : `truncate ${context} (BOS ${show(bos)}, ${
        opts.dropShort ? "short documents dropped" : `padded with ${padId}`
      }) of ${corpus.describe()}`;

  async function* pack(c: TokenRowCounts): AsyncGenerator<TokenRow> {
    let row = new Int32Array(context);
    let fill = 0; // 0: no row begun (SAELens's batch = None)
    let segments: { at: number; label: string }[] = [];
    const emit = (length?: number): TokenRow => {
      const r: TokenRow = { ids: row, index: c.rows++ };
      if (segments.length) r.segments = segments;
      segments = [];
      if (length !== undefined) {
        r.length = length;
        c.padded++;
      }
      c.tokens += length ?? context;
      row = new Int32Array(context);
      fill = 0;
      return r;
    };
    for await (const doc of corpus.documents()) {
      const ids = idsOf(doc, tokenizer);
      if (!doc.continues) c.documents++;
      if (ids.length === 0) continue;
      // Pre-tokenised ids carry their own special tokens; a continued piece is no new document.
      const plain = doc.ids !== undefined || doc.continues === true;
      let offset = 0;
      let startOfDocument = !plain;
      while (offset < ids.length) {
        // Each pass starts a row or a document within one: where this document's label begins.
        if (doc.label !== undefined) segments.push({ at: fill, label: doc.label });
        const prefix: number[] = [];
        let first = ids[offset];
        if (startOfDocument && beginDocument !== null && first !== beginDocument) {
          prefix.push(beginDocument);
          first = beginDocument;
        }
        if (fill === 0) {
          if (bos !== null && !plain && first !== bos) prefix.unshift(bos);
        } else if (startOfDocument && separator !== null && first !== separator) {
          prefix.unshift(separator);
        }
        for (let k = 0; k < prefix.length && fill < context; k++) row[fill++] = prefix[k];
        const take = Math.min(context - fill, ids.length - offset);
        row.set(ids.subarray(offset, offset + take), fill);
        fill += take;
        offset += take;
        startOfDocument = false;
        if (fill === context) yield emit();
      }
    }
    if (fill > 0 && opts.padLast) {
      row.fill(padId, fill);
      yield emit(fill);
    }
  }

  async function* truncate(c: TokenRowCounts): AsyncGenerator<TokenRow> {
    let row: Int32Array | null = null;
    let fill = 0;
    let label: string | undefined;
    const finish = (): TokenRow | null => {
      const r = row!;
      const n = fill;
      row = null;
      const seg = label === undefined ? {} : { segments: [{ at: 0, label }] };
      if (n === context) {
        c.tokens += context;
        return { ids: r, index: c.rows++, ...seg };
      }
      if (opts.dropShort) {
        c.droppedShort++;
        return null;
      }
      r.fill(padId, n);
      c.tokens += n;
      c.padded++;
      return { ids: r, index: c.rows++, length: n, ...seg };
    };
    for await (const doc of corpus.documents()) {
      if (doc.continues) {
        // More of the document in progress: it fills what room its row has left.
        if (row !== null && fill < context) {
          const take = Math.min(context - fill, doc.ids!.length);
          row.set(doc.ids!.subarray(0, take), fill);
          fill += take;
        }
        continue;
      }
      if (row !== null) {
        const r = finish();
        if (r) yield r;
      }
      const ids = idsOf(doc, tokenizer);
      c.documents++;
      if (ids.length === 0) continue;
      row = new Int32Array(context);
      fill = 0;
      label = doc.label;
      if (bos !== null && doc.ids === undefined && ids[0] !== bos) row[fill++] = bos;
      const take = Math.min(context - fill, ids.length);
      row.set(ids.subarray(0, take), fill);
      fill += take;
    }
    if (row !== null) {
      const r = finish();
      if (r) yield r;
    }
  }

  return {
    context,
    describe,
    counts: () => ({ ...counts }),
    rows() {
      const c: TokenRowCounts = { documents: 0, tokens: 0, rows: 0, padded: 0, droppedShort: 0 };
      counts = c;
      return mode === "pack" ? pack(c) : truncate(c);
    },
  };
}
