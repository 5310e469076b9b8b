/**
 * fortune(6) files (Debian `fortunes-de`): entries separated by lines holding only `%`. The
 * `.dat` files are indexes, not text; where both `name` and `name.u8` exist the `.u8` one is the
 * UTF-8 variant and is preferred (in fortunes-de 0.35 both are the same UTF-8 file).
 */

/** The entries of one fortune file, trailing blanks trimmed, empty entries dropped. */
export function splitFortunes(text: string): string[] {
  const out: string[] = [];
  let cur: string[] = [];
  const flush = () => {
    const t = cur.join("\n").replace(/^\n+|\s+$/g, "");
    if (t !== "") out.push(t);
    cur = [];
  };
  for (const line of text.replace(/\r\n?/g, "\n").split("\n")) {
    if (line.trimEnd() === "%") flush();
    else cur.push(line.trimEnd());
  }
  flush();
  return out;
}

/** Of a folder's file names, the fortune text files to read: no `.dat`, `.u8` over the plain twin. */
export function fortuneFiles(names: readonly string[]): string[] {
  const set = new Set(names);
  return names.filter((n) => !n.endsWith(".dat") && !(set.has(n + ".u8"))).sort();
}
