/**
 * A ZIP reader for the archives PyTorch writes (`torch.save`): stored (uncompressed) entries,
 * ZIP64 when an archive passes 4 GiB. The central directory is read from the end record; every
 * offset and size is checked against the file before use, and each entry's CRC-32 is verified
 * when it is read. Errors are ZipError naming the file, the entry and the byte offset.
 */

export class ZipError extends Error {
  override name = "ZipError";
}

export interface ZipEntry {
  name: string;
  /** Offset of the entry's data in the archive. */
  dataOffset: number;
  size: number;
  crc32: number;
}

const EOCD = 0x06054b50,
  EOCD64 = 0x06064b50,
  LOC64 = 0x07064b50,
  CEN = 0x02014b50,
  LOC = 0x04034b50;
const MAX_ENTRIES = 1 << 20;

let crcTable: Uint32Array | null = null;
export function crc32(b: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < b.length; i++) c = crcTable[(c ^ b[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Index the entries of a ZIP archive held in memory. */
export function readZip(bytes: Uint8Array, source = "<bytes>"): Map<string, ZipEntry> {
  const fail = (msg: string): never => {
    throw new ZipError(`${source}: ${msg}`);
  };
  const n = bytes.length;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, n);
  const u16 = (p: number) => dv.getUint16(p, true), u32 = (p: number) => dv.getUint32(p, true);
  const u64 = (p: number, what: string) => {
    const v = dv.getBigUint64(p, true);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`${what} ${v} at byte ${p} is too large`);
    return Number(v);
  };
  if (n < 22) fail(`file is ${n} bytes, too short for a ZIP end record`);
  // The end record is the last 22 bytes plus a comment of up to 65535 bytes.
  let eocd = -1;
  for (let p = n - 22; p >= Math.max(0, n - 22 - 65535); p--) {
    if (u32(p) === EOCD && p + 22 + u16(p + 20) === n) {
      eocd = p;
      break;
    }
  }
  if (eocd < 0) fail("not a ZIP archive: no end-of-central-directory record in the last 64 KiB");
  let count = u16(eocd + 10), cdSize = u32(eocd + 12), cdOffset = u32(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || u32(loc) !== LOC64) {
      fail(`ZIP64 fields at byte ${eocd} but no ZIP64 locator before them`);
    }
    const rec = u64(loc + 8, "ZIP64 end record offset");
    if (rec + 56 > n || u32(rec) !== EOCD64) {
      fail(
        `ZIP64 end record offset ${rec} (at byte ${loc + 8}) does not point at a ZIP64 end record`,
      );
    }
    count = u64(rec + 32, "entry count");
    cdSize = u64(rec + 40, "central directory size");
    cdOffset = u64(rec + 48, "central directory offset");
  }
  if (count > MAX_ENTRIES) fail(`${count} entries exceed the limit of ${MAX_ENTRIES}`);
  if (cdOffset + cdSize > n) {
    fail(
      `central directory [${cdOffset}, ${
        cdOffset + cdSize
      }) runs past the end of the file (${n} bytes)`,
    );
  }
  const entries = new Map<string, ZipEntry>();
  const dec = new TextDecoder("utf-8", { fatal: false });
  let p = cdOffset;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdOffset + cdSize || u32(p) !== CEN) {
      fail(`central directory entry ${i} at byte ${p} is missing or corrupt`);
    }
    const method = u16(p + 10), crc = u32(p + 16);
    let csize = u32(p + 20), size = u32(p + 24), local = u32(p + 42);
    const nameLen = u16(p + 28), extraLen = u16(p + 30), commentLen = u16(p + 32);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cdOffset + cdSize) {
      fail(`central directory entry ${i} at byte ${p} runs past the directory`);
    }
    const name = dec.decode(bytes.subarray(p + 46, p + 46 + nameLen));
    // ZIP64 extra field: the 0xFFFFFFFF fields, in order, as u64.
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen;) {
      const id = u16(e), len = u16(e + 2);
      if (id === 1) {
        let q = e + 4;
        if (size === 0xffffffff) (size = u64(q, "size")), (q += 8);
        if (csize === 0xffffffff) (csize = u64(q, "compressed size")), (q += 8);
        if (local === 0xffffffff) local = u64(q, "local header offset");
      }
      e += 4 + len;
    }
    if (method !== 0) {
      fail(
        `entry ${
          JSON.stringify(name)
        } uses compression method ${method}; only stored entries (as torch.save writes) are supported`,
      );
    }
    if (csize !== size) {
      fail(
        `entry ${JSON.stringify(name)}: stored entry with compressed size ${csize} != size ${size}`,
      );
    }
    if (local + 30 > n || u32(local) !== LOC) {
      fail(
        `entry ${
          JSON.stringify(name)
        }: local header offset ${local} does not point at a local header`,
      );
    }
    const dataOffset = local + 30 + u16(local + 26) + u16(local + 28);
    if (dataOffset + size > n) {
      fail(
        `entry ${JSON.stringify(name)}: data [${dataOffset}, ${
          dataOffset + size
        }) runs past the end of the file (${n} bytes)`,
      );
    }
    if (entries.has(name)) fail(`entry ${JSON.stringify(name)} appears twice`);
    entries.set(name, { name, dataOffset, size, crc32: crc });
    p = end;
  }
  return entries;
}

/** An entry's bytes (a view), after checking its CRC-32. */
export function zipData(bytes: Uint8Array, e: ZipEntry, source = "<bytes>"): Uint8Array {
  const data = bytes.subarray(e.dataOffset, e.dataOffset + e.size);
  const got = crc32(data);
  if (got !== e.crc32) {
    throw new ZipError(
      `${source}: entry ${JSON.stringify(e.name)} (bytes ${e.dataOffset}..${
        e.dataOffset + e.size
      }) fails its CRC-32 check: 0x${got.toString(16)} vs 0x${e.crc32.toString(16)}`,
    );
  }
  return data;
}
