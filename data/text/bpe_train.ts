/**
 * Byte-level BPE training, GPT-2 style, with Hugging Face tokenizers' BpeTrainer rules:
 *  - words: GPT-2's regex split (bpe_words.ts), each word its UTF-8 bytes, each byte one of the 256
 *    byte pieces (ids 0…255 in code-point order, as GPT-2's; byte_level.ts);
 *  - a pair's count is the sum, over the distinct words, of word count × the adjacent positions
 *    holding the pair. Overlaps count at every position: "aaaa" holds (a, a) three times;
 *  - each step merges the pair of highest count; ties go to the smallest (left id, right id), ids
 *    being byte ids then merge ids in the order made (HF compares the same ids, its special tokens
 *    being first shifts them all alike). The merge is applied in every word left to right, so
 *    "aaaa" becomes "aa aa" and "aaa" becomes "aa a";
 *  - a merge whose string already is a piece (two pairs can spell one string) reuses that id: the
 *    merge is recorded, the vocabulary does not grow;
 *  - training stops when the vocabulary (special tokens included) reaches vocabSize, when no pair is
 *    left, or when the best count is below minFrequency (or 1).
 * Special tokens take the last ids (GPT-2's `<|endoftext|>` is its last id; HF's trainer puts them
 * first), so byte and merge ids are GPT-2's layout. A merge that would spell a special token is
 * never made.
 *
 * Speed: pair counts are kept incrementally; each pair keeps a list of the words that may hold it
 * (appended when a merge creates it there; stale entries are skipped) and a max-heap orders pairs
 * by (count, ids) with lazy invalidation: counts only fall after they are pushed, except for pairs a
 * merge creates, which are pushed again. A merge touches only the words in its pair's list.
 */
import { BYTE_IDS, BYTE_PIECES } from "./byte_level.ts";
import { countDocuments, type WordCounts } from "./bpe_words.ts";

export interface BpeTrainOptions {
  /** Ids in all: 256 bytes + merges + special tokens. */
  vocabSize: number;
  /** Stop when the best pair occurs fewer times (default 0: as HF, a pair must occur once). */
  minFrequency?: number;
  /** Added tokens, given the last ids in this order (default `["<|endoftext|>"]`). */
  specialTokens?: readonly string[];
  /** Called after each merge with the merges made and the most there can be. */
  onMerge?: (done: number, target: number) => void;
}

export interface BpeResult {
  /** Piece → id: bytes 0…255, merges in order, then the special tokens. */
  vocab: Record<string, number>;
  /** Merges by rank, as byte-level piece pairs. */
  merges: [string, string][];
  specialTokens: { content: string; id: number }[];
  /** Ids in all (vocabSize unless training stopped early). */
  size: number;
  /** Why training ended: the size was reached, no pair was left, or minFrequency. */
  stopped: "size" | "no pairs" | "min frequency";
  /** Distinct words counted, and the words' occurrences. */
  words: number;
  occurrences: number;
  /** The training text's UTF-8 bytes, and its tokens under the merges learned (bytes per token). */
  bytes: number;
  tokens: number;
}

/** Bad options or no text; the message says which. */
export class BpeTrainError extends Error {
  override name = "BpeTrainError";
}

function checkOptions(opts: BpeTrainOptions): { specials: string[]; minFreq: number } {
  const specials = [...(opts.specialTokens ?? ["<|endoftext|>"])];
  const { vocabSize } = opts;
  const least = 256 + specials.length;
  if (!Number.isInteger(vocabSize) || vocabSize < least) {
    throw new BpeTrainError(
      `vocabSize must be an integer ≥ ${least} (256 bytes + ${specials.length} special token${
        specials.length === 1 ? "" : "s"
      }), got ${vocabSize}`,
    );
  }
  const minFreq = opts.minFrequency ?? 0;
  if (!Number.isFinite(minFreq) || minFreq < 0) {
    throw new BpeTrainError(`minFrequency must be a number ≥ 0, got ${minFreq}`);
  }
  const bytes = new Set(BYTE_PIECES);
  const seen = new Set<string>();
  for (const t of specials) {
    if (typeof t !== "string" || t === "") {
      throw new BpeTrainError(`special tokens must be non-empty strings, got ${JSON.stringify(t)}`);
    }
    if (seen.has(t)) throw new BpeTrainError(`special token ${JSON.stringify(t)} is given twice`);
    if (bytes.has(t)) {
      throw new BpeTrainError(`special token ${JSON.stringify(t)} is a byte piece already`);
    }
    seen.add(t);
  }
  return { specials, minFreq };
}

/** Train on documents: count their words, then merge (trainBpeCounts). */
export async function trainBpe(
  docs: Iterable<string> | AsyncIterable<string>,
  opts: BpeTrainOptions & { onDocument?: (counts: WordCounts) => void },
): Promise<BpeResult> {
  checkOptions(opts);
  const counts = await countDocuments(docs, opts.onDocument);
  return trainBpeCounts(counts.counts, opts);
}

// Growable typed arrays: the trainer's tables grow by doubling.
function grownI32(a: Int32Array<ArrayBuffer>, need: number): Int32Array<ArrayBuffer> {
  if (need <= a.length) return a;
  const b = new Int32Array(Math.max(need, 2 * a.length));
  b.set(a);
  return b;
}
function grownF64(a: Float64Array<ArrayBuffer>, need: number): Float64Array<ArrayBuffer> {
  if (need <= a.length) return a;
  const b = new Float64Array(Math.max(need, 2 * a.length));
  b.set(a);
  return b;
}

/** Train on a table of distinct words (as the regex cut them) and their counts. */
export function trainBpeCounts(
  counts: ReadonlyMap<string, number>,
  opts: BpeTrainOptions,
): BpeResult {
  const { specials, minFreq } = checkOptions(opts);
  if (counts.size === 0) throw new BpeTrainError("empty corpus: no words to train on");
  const target = opts.vocabSize - specials.length; // byte pieces + merged pieces

  // Words of two bytes or more, their symbols laid end to end; a merge shortens a word in place.
  let sym = new Int32Array(1 << 16);
  let wStart = new Int32Array(1 << 12), wLen = new Int32Array(1 << 12);
  let wCnt = new Float64Array(1 << 12);
  let nSym = 0, nWords = 0, occurrences = 0, bytes = 0, shortTokens = 0;
  const enc = new TextEncoder();
  let buf = new Uint8Array(256);
  for (const [w, c] of counts) {
    if (!Number.isSafeInteger(c) || c < 1) {
      throw new BpeTrainError(
        `word ${JSON.stringify(w)}: count must be a positive integer, got ${c}`,
      );
    }
    occurrences += c;
    if (buf.length < 3 * w.length) buf = new Uint8Array(3 * w.length);
    const n = enc.encodeInto(w, buf).written;
    bytes += c * n;
    if (n < 2) {
      shortTokens += c * n;
      continue;
    }
    sym = grownI32(sym, nSym + n);
    for (let i = 0; i < n; i++) sym[nSym + i] = BYTE_IDS[buf[i]];
    wStart = grownI32(wStart, nWords + 1), wLen = grownI32(wLen, nWords + 1);
    wCnt = grownF64(wCnt, nWords + 1);
    wStart[nWords] = nSym, wLen[nWords] = n, wCnt[nWords] = c;
    nWords++, nSym += n;
  }

  // Pairs: id by key left·K + right; count; the head of the list of words that may hold it.
  const K = opts.vocabSize;
  const pairOf = new Map<number, number>();
  let pA = new Int32Array(1 << 14), pB = new Int32Array(1 << 14), pHead = new Int32Array(1 << 14);
  let pLast = new Int32Array(1 << 14), pSeen = new Int32Array(1 << 14);
  let pCnt = new Float64Array(1 << 14);
  let nPairs = 0;
  // The word lists, as linked nodes in one pool (word, next node).
  let nodeW = new Int32Array(1 << 16), nodeNext = new Int32Array(1 << 16);
  let nNodes = 0;

  const pairId = (a: number, b: number): number => {
    const key = a * K + b;
    let p = pairOf.get(key);
    if (p === undefined) {
      p = nPairs++;
      if (p >= pA.length) {
        pA = grownI32(pA, p + 1), pB = grownI32(pB, p + 1), pHead = grownI32(pHead, p + 1);
        pLast = grownI32(pLast, p + 1), pSeen = grownI32(pSeen, p + 1);
        pCnt = grownF64(pCnt, p + 1);
      }
      pA[p] = a, pB[p] = b, pCnt[p] = 0, pHead[p] = -1, pLast[p] = -1, pSeen[p] = 0;
      pairOf.set(key, p);
    }
    return p;
  };
  const listWord = (p: number, w: number): void => {
    if (pLast[p] === w) return;
    pLast[p] = w;
    if (nNodes >= nodeW.length) {
      nodeW = grownI32(nodeW, nNodes + 1), nodeNext = grownI32(nodeNext, nNodes + 1);
    }
    nodeW[nNodes] = w, nodeNext[nNodes] = pHead[p], pHead[p] = nNodes++;
  };

  for (let w = 0; w < nWords; w++) {
    const s = wStart[w], e = s + wLen[w] - 1, c = wCnt[w];
    for (let i = s; i < e; i++) {
      const p = pairId(sym[i], sym[i + 1]);
      pCnt[p] += c;
      listWord(p, w);
    }
  }

  // Max-heap of (pair, its count when pushed): higher count first, then smaller (left, right).
  let hP = new Int32Array(Math.max(16, nPairs)), hC = new Float64Array(Math.max(16, nPairs));
  let hN = 0;
  const above = (p: number, c: number, q: number, d: number): boolean =>
    c > d || (c === d && (pA[p] < pA[q] || (pA[p] === pA[q] && pB[p] < pB[q])));
  const push = (p: number, c: number): void => {
    if (hN >= hP.length) hP = grownI32(hP, hN + 1), hC = grownF64(hC, hN + 1);
    let i = hN++;
    while (i > 0) {
      const up = (i - 1) >> 1;
      if (!above(p, c, hP[up], hC[up])) break;
      hP[i] = hP[up], hC[i] = hC[up], i = up;
    }
    hP[i] = p, hC[i] = c;
  };
  const popTop = (): void => {
    const p = hP[--hN], c = hC[hN];
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= hN) break;
      const r = l + 1;
      const m = r < hN && above(hP[r], hC[r], hP[l], hC[l]) ? r : l;
      if (!above(hP[m], hC[m], p, c)) break;
      hP[i] = hP[m], hC[i] = hC[m], i = m;
    }
    if (hN > 0) hP[i] = p, hC[i] = c;
  };
  for (let p = 0; p < nPairs; p++) push(p, pCnt[p]);

  const pieces = [...BYTE_PIECES];
  const pieceId = new Map(pieces.map((p, i) => [p, i]));
  const specialSet = new Set(specials);
  const merges: [number, number][] = [];
  const wSeen = new Int32Array(nWords);
  const touched: number[] = [];
  let stamp = 0;
  // Scratch for one word: which old positions a merge covers, the new symbols, which are new.
  let inSpan = new Uint8Array(64), made = new Uint8Array(64), out = new Int32Array(64);

  const less = (x: number, y: number, c: number): void => {
    pCnt[pairOf.get(x * K + y)!] -= c;
  };
  const more = (x: number, y: number, c: number, w: number): void => {
    const p = pairId(x, y);
    pCnt[p] += c;
    listWord(p, w);
    if (pSeen[p] !== stamp) pSeen[p] = stamp, touched.push(p);
  };
  /** Merge (a, b) → id in word w, left to right; update the counts of the pairs that change. */
  const mergeWord = (w: number, a: number, b: number, id: number): void => {
    const s = wStart[w], L = wLen[w], c = wCnt[w];
    let i = 0;
    while (i < L - 1 && !(sym[s + i] === a && sym[s + i + 1] === b)) i++;
    if (i >= L - 1) return; // a stale list entry: the word no longer holds the pair
    if (L > inSpan.length) {
      inSpan = new Uint8Array(2 * L), made = new Uint8Array(2 * L), out = new Int32Array(2 * L);
    }
    if (i > 0) inSpan[i - 1] = 0, made[i - 1] = 0, out[i - 1] = sym[s + i - 1];
    let o = i;
    for (let j = i; j < L;) {
      if (j + 1 < L && sym[s + j] === a && sym[s + j + 1] === b) {
        inSpan[j] = 1, inSpan[j + 1] = 1, out[o] = id, made[o++] = 1, j += 2;
      } else {
        inSpan[j] = 0, out[o] = sym[s + j], made[o++] = 0, j++;
      }
    }
    // Every old adjacency touching a merged position goes; every new one touching a new piece comes.
    const from = i > 0 ? i - 1 : 0;
    for (let k = from; k < L - 1; k++) {
      if (inSpan[k] | inSpan[k + 1]) less(sym[s + k], sym[s + k + 1], c);
    }
    for (let k = i; k < o; k++) sym[s + k] = out[k];
    wLen[w] = o;
    for (let k = from; k < o - 1; k++) {
      if (made[k] | made[k + 1]) more(out[k], out[k + 1], c, w);
    }
  };

  let stopped: BpeResult["stopped"] = "size";
  const most = target - 256;
  for (;;) {
    if (pieces.length >= target) break;
    if (hN === 0) {
      stopped = "no pairs";
      break;
    }
    const p = hP[0], c = hC[0];
    popTop();
    if (c !== pCnt[p]) {
      if (pCnt[p] > 0) push(p, pCnt[p]);
      continue;
    }
    if (c < 1) {
      stopped = "no pairs";
      break;
    }
    if (c < minFreq) {
      stopped = "min frequency";
      break;
    }
    const a = pA[p], b = pB[p];
    const str = pieces[a] + pieces[b];
    if (specialSet.has(str)) continue; // never merged; pushed again only if a merge adds to it
    let id = pieceId.get(str);
    if (id === undefined) {
      id = pieces.length;
      pieces.push(str);
      pieceId.set(str, id);
    }
    merges.push([a, b]);
    stamp++;
    touched.length = 0;
    for (let node = pHead[p]; node !== -1; node = nodeNext[node]) {
      const w = nodeW[node];
      if (wSeen[w] === stamp) continue;
      wSeen[w] = stamp;
      mergeWord(w, a, b, id);
    }
    pHead[p] = -1; // the pair is gone from every word (its count is now 0)
    for (const q of touched) if (pCnt[q] > 0) push(q, pCnt[q]);
    opts.onMerge?.(merges.length, most);
  }

  let tokens = shortTokens;
  for (let w = 0; w < nWords; w++) tokens += wCnt[w] * wLen[w];
  const vocab: Record<string, number> = {};
  pieces.forEach((piece, i) => vocab[piece] = i);
  const specialTokens = specials.map((content, k) => ({ content, id: pieces.length + k }));
  for (const t of specialTokens) vocab[t.content] = t.id;
  return {
    vocab,
    merges: merges.map(([a, b]) => [pieces[a], pieces[b]]),
    specialTokens,
    size: pieces.length + specials.length,
    stopped,
    words: counts.size,
    occurrences,
    bytes,
    tokens,
  };
}
