/**
 * GPT-2's byte-level alphabet and word split, as the ByteLevel pre-tokenizer of tokenizer.json
 * applies them (`add_prefix_space` false, `use_regex` true): text is cut into words by one regex,
 * each word's UTF-8 bytes are spelt with 256 printable characters. The BPE trainer counts words with
 * exactly this split, so what it learns is what encoding later sees.
 */

/**
 * GPT-2's split: contractions, letters with an optional leading space, numbers likewise, other
 * symbols likewise, whitespace not followed by a non-space (so " word" keeps its space), whitespace.
 * The same pattern @huggingface/tokenizers' ByteLevel pre-tokenizer uses (it covers every character:
 * the matches tile the text).
 */
export const GPT2_SPLIT =
  /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** Byte b's character: the 188 printable bytes stand for themselves, the other 68 are U+0100+n. */
export const BYTE_CHARS: readonly string[] = (() => {
  const out: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
    out.push(String.fromCharCode(printable ? b : 256 + n++));
  }
  return out;
})();

/**
 * The 256 byte pieces in code-point order, which is GPT-2's id order (`!` = 0 … `ÿ` = 187, then
 * `Ā` = 188 for byte 0 … `Ń` = 255) and the order HF's trainer gives its initial alphabet.
 */
export const BYTE_PIECES: readonly string[] = [...BYTE_CHARS].sort((a, b) =>
  a.charCodeAt(0) - b.charCodeAt(0)
);

/** The id (index in BYTE_PIECES) of each byte value. */
export const BYTE_IDS: Int32Array = (() => {
  const out = new Int32Array(256);
  const rank = new Map(BYTE_PIECES.map((p, i) => [p, i]));
  for (let b = 0; b < 256; b++) out[b] = rank.get(BYTE_CHARS[b])!;
  return out;
})();

/** `word` spelt in byte-level characters (UTF-8 bytes; a lone surrogate becomes U+FFFD's bytes). */
export function byteLevel(word: string): string {
  let s = "";
  for (const b of new TextEncoder().encode(word)) s += BYTE_CHARS[b];
  return s;
}

const BYTE_OF = new Map(BYTE_CHARS.map((c, b) => [c, b]));

/** The bytes a byte-level piece spells, or null when a character is not one of the 256. */
export function byteLevelBytes(piece: string): Uint8Array | null {
  const bytes = new Uint8Array(piece.length);
  for (let i = 0; i < piece.length; i++) {
    const b = BYTE_OF.get(piece[i]);
    if (b === undefined) return null;
    bytes[i] = b;
  }
  return bytes;
}

/** The text of a byte-level piece (its bytes decoded as UTF-8; a piece may end inside a character). */
export function fromByteLevel(piece: string): string {
  const bytes = byteLevelBytes(piece);
  if (!bytes) throw new RangeError(`${JSON.stringify(piece)} is not a byte-level piece`);
  return new TextDecoder().decode(bytes);
}
