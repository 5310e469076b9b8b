/**
 * Where a corpus source came from: a Debian package's version, licence and file list (read from
 * dpkg's own database files, so no subprocess and a test can point at a fake one), or an npm
 * package's package.json. A package that is not installed is `null`, for the caller to report.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

export interface PackageInfo {
  registry: "debian" | "npm";
  name: string;
  version: string;
  /** SPDX-style summary: package.json "license", or DEP-5 `Files: *` License of the copyright file. */
  licence: string;
  /** Where the licence was read (a copyright file or a package.json). */
  licenceFile: string;
}

async function readText(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch {
    return null;
  }
}

/** The installed version of `pkg` in a dpkg status file's text, or null. */
export function dpkgVersion(status: string, pkg: string): string | null {
  for (const stanza of status.split(/\n\s*\n/)) {
    const field = (name: string) => new RegExp(`^${name}: *(.*)$`, "m").exec(stanza)?.[1].trim();
    if (field("Package") !== pkg) continue;
    if (!/ installed$/.test(field("Status") ?? "")) continue;
    const v = field("Version");
    if (v) return v;
  }
  return null;
}

/**
 * The licence summary of a Debian copyright file: the License of its `Files: *` stanza when the
 * file is machine-readable (DEP-5), else null (the caller supplies what the text says).
 */
export function dep5Licence(copyright: string): string | null {
  if (!/^Format:\s*\S*copyright-format/m.test(copyright)) return null;
  for (const stanza of copyright.split(/\n\s*\n/)) {
    if (!/^Files:\s*\*\s*$/m.test(stanza)) continue;
    const m = /^License:\s*(.+)$/m.exec(stanza);
    if (m) return m[1].trim();
  }
  return null;
}

/** Paths of a dpkg-managed machine: the status file, the info folder, /usr/share/doc. */
export interface DpkgPaths {
  status: string;
  info: string;
  doc: string;
}

export const DPKG: DpkgPaths = {
  status: "/var/lib/dpkg/status",
  info: "/var/lib/dpkg/info",
  doc: "/usr/share/doc",
};

/**
 * A Debian package's version and licence (`licenceHint` where its copyright file is not DEP-5),
 * or null when it is not installed.
 */
export async function debianPackage(
  pkg: string,
  licenceHint: string,
  paths: DpkgPaths = DPKG,
): Promise<PackageInfo | null> {
  const status = await readText(paths.status);
  const version = status === null ? null : dpkgVersion(status, pkg);
  if (version === null) return null;
  const licenceFile = join(paths.doc, pkg, "copyright");
  const copyright = await readText(licenceFile);
  const licence = (copyright && dep5Licence(copyright)) ?? licenceHint;
  return { registry: "debian", name: pkg, version, licence, licenceFile };
}

/** The files dpkg lists for `pkg` (its `PKG.list` or `PKG:ARCH.list`), or null. */
export async function dpkgFiles(pkg: string, paths: DpkgPaths = DPKG): Promise<Set<string> | null> {
  let names: string[];
  try {
    names = await readdir(paths.info);
  } catch {
    return null;
  }
  const list = names.filter((n) =>
    n === `${pkg}.list` || n.startsWith(`${pkg}:`) && n.endsWith(".list")
  )
    .sort();
  if (list.length === 0) return null;
  const files = new Set<string>();
  for (const n of list) {
    for (const line of (await readText(join(paths.info, n)) ?? "").split("\n")) {
      if (line) files.add(line);
    }
  }
  return files;
}

/** An npm package's name, version and licence from its package.json, or null when absent. */
export async function npmPackage(dir: string): Promise<PackageInfo | null> {
  const licenceFile = join(dir, "package.json");
  const text = await readText(licenceFile);
  if (text === null) return null;
  let json: { name?: string; version?: string; license?: unknown };
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${licenceFile}: malformed JSON: ${(e as Error).message}`);
  }
  const licence = typeof json.license === "string" ? json.license : "UNKNOWN";
  return {
    registry: "npm",
    name: json.name ?? dir,
    version: json.version ?? "UNKNOWN",
    licence,
    licenceFile,
  };
}
