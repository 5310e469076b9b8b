/**
 * A window of token ids as text, rendered from bytes, with each token's place in that text. A
 * byte-level token may hold part of a UTF-8 character (`プ` is three bytes, often two tokens), so
 * decoding token by token prints `�` twice where one character belongs. Here the window's bytes
 * are joined first and decoded once, and every token keeps the characters its bytes touch: a
 * character split across two tokens shows whole and belongs to both, so highlighting either one
 * marks it. `sae features` printing and the server's feature pages both render windows with this.
 */
import type { Tokenizer } from "./tokenizer.ts";

export interface TokenSpans {
  text: string;
  /**
   * Per token [start, end) in `text` (UTF-16 units): the characters any of its bytes belong to.
   * Neighbours overlap on a character they share; an id < 0 (outside the row) has an empty span.
   */
  spans: [number, number][];
}

/** Length of the UTF-8 sequence a lead byte starts, and the allowed range of the next byte. */
function lead(b: number): [number, number, number] {
  if (b < 0x80) return [1, 0, 0];
  if (b >= 0xc2 && b <= 0xdf) return [2, 0x80, 0xbf];
  if (b === 0xe0) return [3, 0xa0, 0xbf];
  if (b === 0xed) return [3, 0x80, 0x9f];
  if (b >= 0xe1 && b <= 0xef) return [3, 0x80, 0xbf];
  if (b === 0xf0) return [4, 0x90, 0xbf];
  if (b >= 0xf1 && b <= 0xf3) return [4, 0x80, 0xbf];
  if (b === 0xf4) return [4, 0x80, 0x8f];
  return [0, 0, 0];
}

/**
 * `bytes` decoded as UTF-8 the way TextDecoder does (a maximal invalid subpart becomes one U+FFFD),
 * calling `emit(text, from, to)` for each character with the bytes [from, to) it came from.
 */
export function decodeUtf8(
  bytes: Uint8Array,
  emit: (ch: string, from: number, to: number) => void,
): void {
  let i = 0;
  while (i < bytes.length) {
    const [n, lo, hi] = lead(bytes[i]);
    if (n === 1) {
      emit(String.fromCharCode(bytes[i]), i, i + 1);
      i++;
      continue;
    }
    let k = 1;
    // The second byte has its own range (no overlongs, no surrogates, ≤ U+10FFFF); the rest 80–BF.
    while (k < n && i + k < bytes.length) {
      const b = bytes[i + k], [l, h] = k === 1 ? [lo, hi] : [0x80, 0xbf];
      if (b < l || b > h) break;
      k++;
    }
    if (n === 0 || k < n) {
      emit("\ufffd", i, i + Math.max(k, 1));
      i += Math.max(k, 1);
      continue;
    }
    let cp = bytes[i] & (0xff >> (n + 1));
    for (let j = 1; j < n; j++) cp = (cp << 6) | (bytes[i + j] & 0x3f);
    emit(String.fromCodePoint(cp), i, i + n);
    i += n;
  }
}

/**
 * The text of `ids` and each token's span in it. With a tokenizer that gives bytes
 * (Tokenizer.bytes) the window is decoded from its bytes; otherwise token by token with `decode`;
 * without a tokenizer the ids themselves, space-separated.
 */
export function tokenSpans(tok: Tokenizer | null, ids: ArrayLike<number>): TokenSpans {
  const n = ids.length;
  const spans: [number, number][] = [];
  if (!tok || !tok.bytes) {
    let text = "";
    for (let i = 0; i < n; i++) {
      const id = ids[i];
      if (id < 0) {
        spans.push([text.length, text.length]);
        continue;
      }
      const piece = tok ? tok.decode([id]) : `${text ? " " : ""}${id}`;
      spans.push([text.length, text.length + piece.length]);
      text += piece;
    }
    return { text, spans };
  }
  const parts: Uint8Array[] = [];
  const owner: number[] = [];
  for (let i = 0; i < n; i++) {
    const b = ids[i] >= 0 ? tok.bytes(ids[i]) : new Uint8Array(0);
    parts.push(b);
    for (let j = 0; j < b.length; j++) owner.push(i);
  }
  const bytes = new Uint8Array(owner.length);
  let at = 0;
  for (const p of parts) bytes.set(p, (at += p.length) - p.length);
  // Each token's span grows over every character one of its bytes is in.
  const lo = new Array<number>(n).fill(-1), hi = new Array<number>(n).fill(-1);
  let text = "";
  decodeUtf8(bytes, (ch, from, to) => {
    const start = text.length;
    text += ch;
    for (let t = owner[from]; t <= owner[to - 1]; t++) {
      if (lo[t] < 0) lo[t] = start;
      hi[t] = text.length;
    }
  });
  // Tokens without bytes sit, empty, where the text had got to.
  let pos = 0;
  for (let t = 0; t < n; t++) {
    if (lo[t] < 0) spans.push([pos, pos]);
    else {
      spans.push([lo[t], hi[t]]);
      pos = hi[t];
    }
  }
  return { text, spans };
}
