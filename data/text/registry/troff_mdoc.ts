/**
 * mdoc(7)'s inline macros (the BSD man page language) rendered as text: `Fl x` → `-x`,
 * `Xr ls 1` → `ls(1)`, `Op Fl v` → `[-v]`, quoting and enclosing macros, `Ns` for no space, and
 * punctuation arguments attached to the word before. Macro names that only select a font
 * (`Ar`, `Cm`, `Pa`, …) vanish, leaving their arguments.
 */
import { unescapeTroff } from "./troff_escapes.ts";

/** Enclosing macros: they wrap the rest of the line (up to closing punctuation). */
const ENCLOSE: Record<string, [string, string]> = {
  Op: ["[", "]"],
  Oo: ["[", ""],
  Oc: ["", "]"],
  Pq: ["(", ")"],
  Po: ["(", ""],
  Pc: ["", ")"],
  Bq: ["[", "]"],
  Bo: ["[", ""],
  Bc: ["", "]"],
  Brq: ["{", "}"],
  Bro: ["{", ""],
  Brc: ["", "}"],
  Dq: ["“", "”"],
  Do: ["“", ""],
  Dc: ["", "”"],
  Sq: ["‘", "’"],
  So: ["‘", ""],
  Sc: ["", "’"],
  Ql: ["‘", "’"],
  Qq: ['"', '"'],
  Qo: ['"', ""],
  Qc: ["", '"'],
  Aq: ["⟨", "⟩"],
  Ao: ["⟨", ""],
  Ac: ["", "⟩"],
};
/** Macros that print a fixed name. */
const FIXED: Record<string, string> = {
  At: "AT&T UNIX",
  Bx: "BSD",
  Bsx: "BSD/OS",
  Ux: "UNIX",
  Fx: "FreeBSD",
  Nx: "NetBSD",
  Ox: "OpenBSD",
  Dx: "DragonFly",
  Lb: "",
};
/** Font-only macros: the name disappears, the arguments stay. */
const FONT_ONLY = new Set(
  ("No Ar Cm Ic Pa Li Em Sy Dv Ev Va Er Fa Ft Fd Tn Cd An Lk Mt Ad Ms Sx Ot Ta Xo Xc Ap Ex Rv " +
    "Fo Fc In Vt St Hf Tg")
    .split(" "),
);
const CLOSE_PUNCT = /^[.,;:)\]?!]$/;
const OPEN_PUNCT = /^[([]$/;

function isMacro(t: string): boolean {
  return t in ENCLOSE || t in FIXED || FONT_ONLY.has(t) ||
    ["Fl", "Xr", "Ns", "Nm", "Fn", "Pf"].includes(t);
}

/** Render one mdoc line's tokens (macro names included) as text. */
export function renderMdoc(tokens: string[], name: string): string {
  const words: { t: string; glue: boolean }[] = [];
  let glueNext = false;
  const push = (t: string, glue = false) => {
    words.push({ t, glue: glue || glueNext });
    glueNext = false;
  };
  let i = 0;
  const walk = (stop: (t: string) => boolean) => {
    while (i < tokens.length && !stop(tokens[i])) {
      const t = tokens[i++];
      if (t === "Ns") glueNext = true;
      else if (t === "Pf") {
        if (i < tokens.length) push(unescapeTroff(tokens[i++]));
        glueNext = true;
      } else if (t === "Fl") {
        const arg = i < tokens.length && !isMacro(tokens[i]) && !CLOSE_PUNCT.test(tokens[i])
          ? tokens[i++]
          : "";
        push("-" + unescapeTroff(arg));
      } else if (t === "Xr") {
        const page = tokens[i++] ?? "", sec = tokens[i] && /^\d/.test(tokens[i]) ? tokens[i++] : "";
        push(unescapeTroff(page) + (sec ? `(${sec})` : ""));
      } else if (t === "Nm") {
        if (i >= tokens.length || isMacro(tokens[i]) || CLOSE_PUNCT.test(tokens[i])) push(name);
      } else if (t === "Fn") {
        const fn = unescapeTroff(tokens[i++] ?? "");
        const args: string[] = [];
        while (i < tokens.length && !isMacro(tokens[i]) && !CLOSE_PUNCT.test(tokens[i])) {
          args.push(unescapeTroff(tokens[i++]));
        }
        push(`${fn}(${args.join(", ")})`);
      } else if (t in FIXED) push(FIXED[t]);
      else if (t in ENCLOSE) {
        const [open, close] = ENCLOSE[t];
        if (open) push(open), glueNext = true;
        if (close && open) {
          // wraps the rest of the line, leaving trailing punctuation outside
          let end = tokens.length;
          while (end > i && CLOSE_PUNCT.test(tokens[end - 1])) end--;
          const inner = tokens.slice(i, end);
          i = end;
          const text = renderMdoc(inner, name);
          if (text) push(text);
          push(close, true);
        } else if (close) push(close, true);
      } else if (FONT_ONLY.has(t)) continue;
      else if (CLOSE_PUNCT.test(t)) push(t, true);
      else if (OPEN_PUNCT.test(t)) push(t), glueNext = true;
      else push(unescapeTroff(t));
    }
  };
  walk(() => false);
  let out = "";
  for (const w of words) {
    if (w.t === "") continue;
    out += out === "" || w.glue ? w.t : " " + w.t;
  }
  return out.trim();
}
