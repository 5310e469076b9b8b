/**
 * The first step of BPE training: documents to a table of distinct words and their counts, split
 * with GPT-2's regex (byte_level.ts). Memory grows with the distinct words, not with the text: a
 * word first seen is copied out of its document, so the table holds no document alive.
 */
import { GPT2_SPLIT } from "./byte_level.ts";

/** Distinct words (as the regex cut them, not yet byte-mapped) and how often each occurred. */
export interface WordCounts {
  readonly counts: Map<string, number>;
  /** Documents and UTF-16 code units seen (for progress lines and throughput). */
  documents: number;
  chars: number;
}

export function newWordCounts(): WordCounts {
  return { counts: new Map(), documents: 0, chars: 0 };
}

// V8 and JSC may return a long match as a view into its document; keeping that view as a map key
// would keep the whole document. Joining the code units builds an independent flat string.
const detach = (w: string): string => (w.length >= 13 ? w.split("").join("") : w);

/** Add one document's words to `into`. */
export function countWords(text: string, into: WordCounts): void {
  const words = text.match(GPT2_SPLIT);
  into.documents++;
  into.chars += text.length;
  if (words === null) return;
  const counts = into.counts;
  for (const w of words) {
    const c = counts.get(w);
    if (c === undefined) counts.set(detach(w), 1);
    else counts.set(w, c + 1);
  }
}

/** Count the words of every document (sync or async iterable); `onDocument` is called after each. */
export async function countDocuments(
  docs: Iterable<string> | AsyncIterable<string>,
  onDocument?: (counts: WordCounts) => void,
): Promise<WordCounts> {
  const into = newWordCounts();
  if (Symbol.asyncIterator in docs) {
    for await (const d of docs as AsyncIterable<string>) {
      countWords(d, into);
      onDocument?.(into);
    }
  } else {
    for (const d of docs as Iterable<string>) {
      countWords(d, into);
      onDocument?.(into);
    }
  }
  return into;
}
