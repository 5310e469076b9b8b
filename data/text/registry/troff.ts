/**
 * Man pages (troff source with the man(7) macros, and the common mdoc(7) ones) to plain text, for
 * a training corpus: the words a reader of the formatted page sees, in paragraphs, without the
 * layout. Our own small converter, no groff: comments, macro definitions, conditionals and layout
 * requests are dropped; headings, tags and filled text become lines; tables become tab-separated
 * rows. Filled lines are joined with a space, except between two CJK characters (Japanese source
 * lines break mid-sentence and groff joins them without one).
 */
import { renderMdoc } from "./troff_mdoc.ts";
import { unescapeTroff } from "./troff_escapes.ts";

/** Requests and macros that only change layout: dropped with their arguments. */
const LAYOUT = new Set(
  (
    "TH RS RE PD IX UC DT Dd Dt Os ad na nh hy ft ps vs ll in ti ne fam ss nr ds as tr als rm rn " +
    "cs lf pc hw mso bp ce cu ul ta tc lc fc ev ch wh di da pl pn po mk rt ns rs os cc c2 ec eo " +
    "ig nx rd tl lt ls fl ab sy pso open opena write close hc hla hlm hpf kern lg ss sty " +
    "Sm Bk Ek Ud Db Ed Ef Bf El Lp AT UN TQ"
  ).split(" "),
);
/** man(7) font macros: their arguments are text (the alternating ones without spaces). */
const FONT = new Set(["B", "I", "SM", "SB", "R"]);
const ALTERNATING = new Set(["BR", "BI", "IB", "IR", "RB", "RI"]);

/** Split a request's arguments: blanks separate, "double quotes" group, `""` inside is a quote. */
export function troffArgs(s: string): string[] {
  const args: string[] = [];
  let i = 0;
  while (i < s.length) {
    while (s[i] === " " || s[i] === "\t") i++;
    if (i >= s.length) break;
    let arg = "";
    if (s[i] === '"') {
      i++;
      while (i < s.length) {
        if (s[i] === '"') {
          if (s[i + 1] === '"') arg += '"', i += 2;
          else {
            i++;
            break;
          }
        } else if (s[i] === "\\" && i + 1 < s.length) arg += s[i] + s[i + 1], i += 2;
        else arg += s[i++];
      }
    } else {
      while (i < s.length && s[i] !== " " && s[i] !== "\t") {
        if (s[i] === "\\" && i + 1 < s.length) arg += s[i] + s[i + 1], i += 2;
        else arg += s[i++];
      }
    }
    args.push(arg);
  }
  return args;
}

/** Strip `\"` and `\#` comments (not `\\"`, an escaped backslash then a quote). */
function stripComment(line: string): string {
  for (let i = 0; i < line.length; i++) {
    if (line[i] !== "\\") continue;
    const n = line[i + 1];
    if (n === '"' || n === "#") return line.slice(0, i).replace(/[ \t]+$/, "");
    i++; // skip the escaped character
  }
  return line;
}

const CJK = /[\u3000-\u30ff\u3400-\u9fff\uf900-\ufaff\uff00-\uffef]/;

/** The text being built: paragraphs of lines. */
class Page {
  blocks: string[][] = [];
  lines: string[] = [];
  line = "";
  glue = false; // next text joins without a space (\c, mdoc's Ns)
  emitted = 0; // count of text pieces, so .UE knows whether the link had text

  text(t: string, glue = false): void {
    if (t === "") return;
    this.emitted++;
    if (this.line === "" || glue || this.glue) this.line += t;
    else if (CJK.test(this.line.at(-1)!) && CJK.test(t[0])) this.line += t;
    else this.line += " " + t;
    this.glue = false;
  }
  br(): void {
    const l = this.line.replace(/[ \t]+$/, "");
    if (l !== "") this.lines.push(l);
    this.line = "";
    this.glue = false;
  }
  para(): void {
    this.br();
    while (this.lines.at(-1) === "") this.lines.pop();
    while (this.lines[0] === "") this.lines.shift();
    if (this.lines.length) this.blocks.push(this.lines);
    this.lines = [];
  }
  result(): string {
    this.para();
    return this.blocks.map((b) => b.join("\n")).join("\n\n");
  }
}

/** Table (tbl) state: options, then format lines up to one ending in ".", then data rows. */
type TableState = {
  phase: "format" | "data";
  tab: string;
  cells: string[];
  block: string[] | null;
};

/**
 * Convert one man page's troff source to plain text. A page that only redirects to another
 * (`.so man1/foo.1`) converts to "".
 */
export function troffToText(src: string): string {
  const page = new Page();
  const lines = src.replace(/\r\n?/g, "\n").split("\n");
  let fill = true;
  let tag = false; // .TP: the next text line is the tag, then a line break
  let skipUntil: string | null = null; // .de/.ig bodies
  let braces = 0; // inside a multi-line conditional block \{ … \}
  let table: TableState | null = null;
  let name = ""; // mdoc's .Nm remembers the first name
  const urls: { url: string; at: number }[] = [];
  let redirect = false, content = false;

  const afterText = () => {
    if (!fill) page.br();
    if (tag) page.br(), tag = false;
  };
  const emitLine = (t: string) => {
    let cont = false;
    if (/(^|[^\\])(\\\\)*\\c$/.test(t)) t = t.slice(0, -2), cont = true;
    const text = unescapeTroff(t);
    page.text(fill ? text.replace(/[ \t]+/g, " ").trim() : text.replace(/\s+$/, ""));
    if (cont) page.glue = true;
    else afterText();
  };

  for (let k = 0; k < lines.length; k++) {
    let raw = lines[k];
    // A trailing backslash joins the next input line.
    while (/(^|[^\\])(\\\\)*\\$/.test(raw) && k + 1 < lines.length) {
      raw = raw.slice(0, -1) + lines[++k];
    }
    if (skipUntil !== null) {
      if (raw.trimEnd() === skipUntil || raw.startsWith(skipUntil + " ")) skipUntil = null;
      continue;
    }
    if (braces > 0) {
      braces += count(raw, "\\{") - count(raw, "\\}");
      continue;
    }
    const isRequest = raw.startsWith(".") || raw.startsWith("'");
    if (isRequest && /^[.'][ \t]*\\["#]/.test(raw)) continue; // comment line
    const line = stripComment(raw);
    if (table) {
      table = tableLine(table, line, page);
      if (table === null) fill = true;
      continue;
    }
    if (!isRequest) {
      if (line.trim() === "") {
        if (fill) page.para();
        else page.br(), page.lines.push("");
        continue;
      }
      content = true;
      if (fill && /^[ \t]/.test(line)) page.br();
      emitLine(line);
      continue;
    }
    const m = /^[.'][ \t]*(\S*)[ \t]*(.*)$/.exec(line)!;
    const req = m[1], rest = m[2];
    if (req === "") continue;
    if (req === "so") {
      if (!content) redirect = true;
      continue;
    }
    content = true;
    if (req === "if" || req === "ie" || req === "el" || req === "while") {
      braces = count(rest, "\\{") - count(rest, "\\}");
      continue;
    }
    if (req === "de" || req === "de1" || req === "am" || req === "ig") {
      const args = troffArgs(rest);
      const end = req === "ig" ? args[0] : args[1];
      skipUntil = "." + (end ?? ".");
      continue;
    }
    if (LAYOUT.has(req)) continue;
    const args = troffArgs(rest);
    const txt = (a: string[], sep = " ") => unescapeTroff(a.join(sep)).trim();
    switch (req) {
      case "SH":
      case "SS":
      case "Sh":
      case "Ss":
        page.para();
        if (args.length) page.text(txt(args)), page.para();
        else tag = true;
        break;
      case "PP":
      case "P":
      case "LP":
      case "Pp":
      case "HP":
      case "sp":
      case "Sp":
      case "YS":
      case "Bl":
        page.para();
        break;
      case "br":
        page.br();
        break;
      case "TP":
        page.para();
        tag = true;
        break;
      case "IP":
        page.para();
        if (args[0]) page.text(txt(args.slice(0, 1))), page.br();
        break;
      case "nf":
      case "EX":
      case "Vb":
        page.br();
        fill = false;
        break;
      case "fi":
      case "EE":
      case "Ve":
        page.br();
        fill = true;
        break;
      case "Bd":
        page.para();
        if (args.includes("-literal") || args.includes("-unfilled")) fill = false;
        break;
      case "UR":
      case "MT":
        urls.push({ url: txt(args.slice(0, 1)), at: page.emitted });
        break;
      case "UE":
      case "ME": {
        const u = urls.pop();
        if (u && page.emitted === u.at) page.text(u.url);
        if (args.length) page.text(txt(args), true);
        break;
      }
      case "URL":
      case "MTO":
        page.text(txt(args.slice(1, 2)) || txt(args.slice(0, 1)));
        if (args[2]) page.text(txt(args.slice(2)), true);
        afterText();
        break;
      case "SY":
        page.para();
        page.text(txt(args));
        break;
      case "OP":
        page.text(`[${txt(args)}]`);
        afterText();
        break;
      case "TS":
        page.para();
        fill = false;
        table = { phase: "format", tab: "\t", cells: [], block: null };
        break;
      case "Nm":
        if (!name && args[0]) name = txt(args.slice(0, 1));
        page.text(renderMdoc(["Nm", ...args], name));
        afterText();
        break;
      case "Nd":
        page.text("— " + renderMdoc(args, name));
        afterText();
        break;
      case "It":
        page.para();
        if (args.length) page.text(renderMdoc(args, name)), page.br();
        break;
      case "D1":
      case "Dl":
        page.br();
        page.text(renderMdoc(args, name));
        page.br();
        break;
      default:
        if (FONT.has(req)) {
          if (args.length) page.text(txt(args)), afterText();
        } else if (ALTERNATING.has(req)) {
          page.text(txt(args, "")), afterText();
        } else if (/^[A-Z][a-z][a-z]?$/.test(req)) {
          page.text(renderMdoc([req, ...args], name)), afterText();
        } else if (/^[A-Z]/.test(req) && args.length) {
          page.text(txt(args)), afterText(); // a page's own text macro: keep its words
        }
    }
  }
  return redirect ? "" : page.result();
}

function count(s: string, sub: string): number {
  let n = 0;
  for (let i = s.indexOf(sub); i >= 0; i = s.indexOf(sub, i + sub.length)) n++;
  return n;
}

/** One line inside .TS … .TE; returns the new state, or null when the table ends. */
function tableLine(t: TableState, line: string, page: Page): TableState | null {
  const trimmed = line.trim();
  if (trimmed === ".TE") {
    page.para();
    return null;
  }
  if (t.phase === "format") {
    const tab = /tab\s*\((.)\)/.exec(line);
    if (tab) t.tab = tab[1];
    if (trimmed.endsWith(".")) t.phase = "data";
    return t;
  }
  if (trimmed === ".T&") {
    t.phase = "format";
    return t;
  }
  if (t.block) {
    // inside T{ … T}: text lines form one cell
    if (line.startsWith("T}")) {
      t.cells.push(t.block.join(" "));
      t.block = null;
      return tableRow(t, line.slice(2).replace(new RegExp("^" + escapeRe(t.tab)), ""), page);
    }
    if (!/^[.']/.test(line)) t.block.push(unescapeTroff(line).trim());
    return t;
  }
  if (/^[.']/.test(line) || trimmed === "_" || trimmed === "=") return t;
  return tableRow(t, line, page);
}

function tableRow(t: TableState, line: string, page: Page): TableState {
  if (line === "" && t.cells.length === 0) return t;
  const parts = line.split(t.tab);
  if (parts.at(-1) === "T{") {
    t.cells.push(...parts.slice(0, -1).map((c) => unescapeTroff(c).trim()));
    t.block = [];
    return t;
  }
  const cells = [...t.cells, ...parts.map((c) => unescapeTroff(c).trim())]
    .filter((c) => c !== "_" && c !== "=" && c !== "\\_");
  t.cells = [];
  const row = cells.join("\t").replace(/\t+$/, "");
  if (row.trim() !== "") page.lines.push(row);
  return t;
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
