/**
 * troff's inline escapes resolved to the characters a reader of the formatted page sees: special
 * characters (`\(em`, `\[u00E4]`), predefined strings (`\*(lq`), and every layout-only escape (font,
 * size, motion, registers) dropped. The tables hold the glyphs that occur in Debian's man pages;
 * an unknown named glyph becomes nothing rather than junk.
 */

/** groff_char(7) names → Unicode (the ones used in manpages, manpages-de, manpages-ja). */
const GLYPHS: Record<string, string> = {
  em: "—",
  en: "–",
  hy: "-",
  mi: "-",
  "-": "-",
  aq: "'",
  dq: '"',
  lq: "“",
  rq: "”",
  oq: "‘",
  cq: "’",
  Bq: "„",
  bq: "‚",
  Fo: "«",
  Fc: "»",
  fo: "‹",
  fc: "›",
  bu: "•",
  co: "©",
  rg: "®",
  tm: "™",
  de: "°",
  mu: "×",
  di: "÷",
  "+-": "±",
  "<=": "≤",
  ">=": "≥",
  "!=": "≠",
  "==": "≡",
  "~=": "≅",
  "~~": "≈",
  ap: "∼",
  "->": "→",
  "<-": "←",
  "<>": "↔",
  rA: "⇒",
  lA: "⇐",
  hA: "⇔",
  ua: "↑",
  da: "↓",
  ha: "^",
  ti: "~",
  rs: "\\",
  sl: "/",
  ga: "`",
  aa: "´",
  ba: "|",
  br: "│",
  bv: "|",
  ul: "_",
  ru: "_",
  sc: "§",
  ps: "¶",
  ct: "¢",
  Po: "£",
  Eu: "€",
  eu: "€",
  Ye: "¥",
  "12": "½",
  "14": "¼",
  "34": "¾",
  S1: "¹",
  S2: "²",
  S3: "³",
  ss: "ß",
  ":a": "ä",
  ":o": "ö",
  ":u": "ü",
  ":A": "Ä",
  ":O": "Ö",
  ":U": "Ü",
  ":e": "ë",
  ":i": "ï",
  ":y": "ÿ",
  "'a": "á",
  "'e": "é",
  "'i": "í",
  "'o": "ó",
  "'u": "ú",
  "'E": "É",
  "`a": "à",
  "`e": "è",
  "`o": "ò",
  "^a": "â",
  "^e": "ê",
  "^o": "ô",
  "~n": "ñ",
  ",c": "ç",
  ",C": "Ç",
  "/o": "ø",
  "/O": "Ø",
  oa: "å",
  oA: "Å",
  ae: "æ",
  AE: "Æ",
  at: "@",
  sh: "#",
  Do: "$",
  pl: "+",
  eq: "=",
  lB: "[",
  rB: "]",
  lC: "{",
  rC: "}",
  la: "⟨",
  ra: "⟩",
  dg: "†",
  dd: "‡",
  fm: "′",
  sd: "″",
  pc: "·",
  md: "⋅",
  no: "¬",
  AN: "∧",
  OR: "∨",
  mo: "∈",
  nm: "∉",
  sb: "⊂",
  sp: "⊃",
  ca: "∩",
  cu: "∪",
  es: "∅",
  if: "∞",
  pd: "∂",
  gr: "∇",
  sr: "√",
  is: "∫",
  sq: "□",
  OK: "✓",
  "*a": "α",
  "*b": "β",
  "*g": "γ",
  "*d": "δ",
  "*e": "ε",
  "*l": "λ",
  "*m": "μ",
  "*p": "π",
  "*s": "σ",
  "*t": "τ",
  "*S": "Σ",
  "*W": "Ω",
  "*D": "Δ",
};

/** Predefined strings (`\*(lq`, `\*R`, pod2man's and mdoc's) → text; others expand to nothing. */
const STRINGS: Record<string, string> = {
  lq: "“",
  rq: "”",
  R: "®",
  Tm: "™",
  "C`": "“",
  "C'": "”",
  PI: "π",
  'L"': "“",
  'R"': "”",
  Aq: "'",
  q: '"',
  "-": "—",
};

/** Escapes whose argument is quoted by the next character (`\w'abc'`): all layout, dropped. */
const DELIMITED = new Set("bDhHlLNoRSvwxXZAB");
/** Escapes followed by a one-character, `(xx` or `[name]` argument: fonts, sizes, registers. */
const NAMED_ARG = new Set("fFgkmMnVYO$");
/** Single-character escapes that print nothing. */
const EMPTY = new Set("&)%:|^,/duraczp{}!");

function glyph(name: string): string {
  const g = GLYPHS[name];
  if (g !== undefined) return g;
  // \[u00E4] and composites like \[u0061_0308]
  const m = /^u([0-9A-Fa-f]{4,6})((?:_[0-9A-Fa-f]{4,6})*)$/.exec(name);
  if (m) {
    const cps = [m[1], ...m[2].split("_").filter((s) => s)].map((h) => parseInt(h, 16));
    return String.fromCodePoint(...cps).normalize("NFC");
  }
  if (name.length === 1) return name; // \[x] is just x
  return "";
}

/** Read a `x`, `(xx` or `[name]` argument at s[i]; returns the name and the index after it. */
function readName(s: string, i: number): [string, number] {
  if (s[i] === "(") return [s.slice(i + 1, i + 3), i + 3];
  if (s[i] === "[") {
    const end = s.indexOf("]", i + 1);
    return end < 0 ? [s.slice(i + 1), s.length] : [s.slice(i + 1, end), end + 1];
  }
  return [s[i] ?? "", i + 1];
}

/**
 * Resolve the escapes of one line of troff text (comments already removed). `\c` (continue
 * without a space) is not handled here: the line reader looks for it at the end of a line.
 */
export function unescapeTroff(s: string): string {
  if (!s.includes("\\")) return s;
  let out = "";
  let i = 0;
  while (i < s.length) {
    const c = s[i];
    if (c !== "\\") {
      out += c;
      i++;
      continue;
    }
    const e = s[i + 1];
    i += 2;
    if (e === undefined) break;
    if (e === "\\" || e === "e" || e === "E") out += "\\";
    else if (e === "-") out += "-";
    else if (e === " " || e === "~" || e === "0") out += " ";
    else if (e === "t") out += "\t";
    else if (e === "." || e === "'" || e === "`" || e === '"') out += e === "'" ? "'" : e;
    else if (EMPTY.has(e)) continue;
    else if (e === "(" || e === "[") {
      const [name, next] = readName(s, i - 1);
      out += glyph(name);
      i = next;
    } else if (e === "C" && s[i] !== undefined) {
      const end = s.indexOf(s[i], i + 1);
      out += glyph(s.slice(i + 1, end < 0 ? s.length : end));
      i = end < 0 ? s.length : end + 1;
    } else if (e === "*") {
      const [name, next] = readName(s, i);
      out += STRINGS[name.split(" ")[0]] ?? "";
      i = next;
    } else if (e === "s") {
      // \s0 \s-1 \s+2 \s(12 \s[12] \s'12' \s+(12
      if (s[i] === "+" || s[i] === "-") i++;
      if (s[i] === "(") i += 3;
      else if (s[i] === "[" || s[i] === "'") {
        const end = s.indexOf(s[i] === "[" ? "]" : "'", i + 1);
        i = end < 0 ? s.length : end + 1;
      } else {
        // one digit, or two when the first is 1-3 (classic troff)
        if (/[1-3]/.test(s[i] ?? "") && /\d/.test(s[i + 1] ?? "")) i += 2;
        else if (/\d/.test(s[i] ?? "")) i++;
      }
    } else if (NAMED_ARG.has(e)) {
      if (e === "n" && (s[i] === "+" || s[i] === "-")) i++;
      i = readName(s, i)[1];
    } else if (DELIMITED.has(e)) {
      const delim = s[i];
      const end = delim === undefined ? -1 : s.indexOf(delim, i + 1);
      i = end < 0 ? s.length : end + 1;
    } else out += e; // unknown escape: the character itself, as groff does
  }
  return out;
}
