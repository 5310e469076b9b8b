/**
 * The GPU side of the backend: buffers (pooled), the pipeline cache, dispatch and readback.
 * Every element occupies one 32-bit word on the device (f32, i32, bool as u32, and f16/bf16 as
 * f32 values rounded to the 16-bit type), so every kernel indexes by element.
 */
import type { Gpu } from "./device.ts";

// GPUBufferUsage / GPUMapMode bits, spelled out so no runtime globals are needed.
const MAP_READ = 1, COPY_SRC = 4, COPY_DST = 8, STORAGE = 128;

/** A device buffer of `words` 32-bit elements; `buffer` is null once released. */
export interface GBuf {
  buffer: Gpu;
  words: number;
  /** Capacity in bytes (pool bucket). */
  bytes: number;
}

/** One word per element; never zero-sized (WebGPU rejects empty bindings). */
const bucket = (words: number) => Math.max(16, Math.ceil((words * 4) / 256) * 256);

/**
 * Released buffers wait here for the next allocation of the same size. Queue order makes reuse
 * safe: every later write or dispatch is queued after the work that used the buffer before.
 */
class Pool {
  #free = new Map<number, Gpu[]>();
  pooled = 0;
  allocated = 0;
  constructor(readonly maxPooled: number) {}
  take(device: Gpu, bytes: number): Gpu {
    const b = this.#free.get(bytes)?.pop();
    if (b) {
      this.pooled -= bytes;
      return b;
    }
    this.allocated += bytes;
    return device.createBuffer({ size: bytes, usage: STORAGE | COPY_SRC | COPY_DST });
  }
  give(buf: Gpu, bytes: number): void {
    if (this.pooled + bytes > this.maxPooled) {
      buf.destroy();
      this.allocated -= bytes;
      return;
    }
    let list = this.#free.get(bytes);
    if (!list) this.#free.set(bytes, (list = []));
    list.push(buf);
    this.pooled += bytes;
  }
  clear(): void {
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.allocated -= this.pooled;
    this.pooled = 0;
    this.#free.clear();
  }
}

export const WG = 256;
/** Workgroups per grid dimension (WebGPU's guaranteed minimum). */
const MAX_GROUPS = 65535;

export class Runtime {
  readonly pool: Pool;
  #pipelines = new Map<string, Gpu>();
  constructor(readonly device: Gpu, maxPooledBytes = 1 << 30) {
    this.pool = new Pool(maxPooledBytes);
  }

  alloc(words: number): GBuf {
    const bytes = bucket(words);
    return { buffer: this.pool.take(this.device, bytes), words, bytes };
  }

  free(b: GBuf): void {
    if (b.buffer === null) return;
    this.pool.give(b.buffer, b.bytes);
    b.buffer = null;
  }

  upload(words: Uint32Array | Int32Array | Float32Array): GBuf {
    const b = this.alloc(words.length);
    if (words.length > 0) this.device.queue.writeBuffer(b.buffer, 0, words.buffer, words.byteOffset, words.byteLength);
    return b;
  }

  /** Fill with a 32-bit pattern (zeros by clearBuffer). */
  zeros(words: number): GBuf {
    const b = this.alloc(words);
    const enc = this.device.createCommandEncoder();
    enc.clearBuffer(b.buffer, 0, b.bytes);
    this.device.queue.submit([enc.finish()]);
    return b;
  }

  /** Copy `words` elements of a buffer into a new one. */
  clone(src: GBuf, words: number): GBuf {
    const b = this.alloc(words);
    if (words > 0) {
      const enc = this.device.createCommandEncoder();
      enc.copyBufferToBuffer(src.buffer, 0, b.buffer, 0, words * 4);
      this.device.queue.submit([enc.finish()]);
    }
    return b;
  }

  async read(b: GBuf, words: number): Promise<ArrayBuffer> {
    if (words === 0) return new ArrayBuffer(0);
    if (b.buffer === null) throw new Error("webgpu: read of a released buffer");
    const staging = this.device.createBuffer({ size: words * 4, usage: MAP_READ | COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(b.buffer, 0, staging, 0, words * 4);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(1);
    const out = staging.getMappedRange().slice(0);
    staging.unmap();
    staging.destroy();
    return out;
  }

  pipeline(code: string): Gpu {
    let p = this.#pipelines.get(code);
    if (!p) {
      const module = this.device.createShaderModule({ code });
      p = this.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
      this.#pipelines.set(code, p);
    }
    return p;
  }

  get pipelines(): number {
    return this.#pipelines.size;
  }

  /**
   * Run `code` over `groups` workgroups (spread over a 2-D grid when above the per-dimension
   * limit; shaders recover the linear id with `groupId`). Bindings are `bufs` in order, then
   * `meta` (u32 parameters) as the last binding.
   */
  dispatch(code: string, bufs: GBuf[], meta: ArrayLike<number>, groups: number): void {
    if (groups <= 0) return;
    const pipe = this.pipeline(code);
    const m = new Uint32Array(Math.max(meta.length, 1));
    for (let i = 0; i < meta.length; i++) m[i] = meta[i] >>> 0;
    const mb = this.upload(m);
    const entries = [...bufs, mb].map((b, i) => ({ binding: i, resource: { buffer: b.buffer } }));
    const bind = this.device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries });
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    pass.setPipeline(pipe);
    pass.setBindGroup(0, bind);
    const y = Math.ceil(groups / MAX_GROUPS);
    pass.dispatchWorkgroups(Math.ceil(groups / y), y);
    pass.end();
    this.device.queue.submit([enc.finish()]);
    this.free(mb);
  }
}

/** WGSL: the linear workgroup id over the 2-D grid `dispatch` uses. */
export const GROUP_ID = "(wid.x + wid.y * nwg.x)";
export const ENTRY_ARGS = "@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>";
