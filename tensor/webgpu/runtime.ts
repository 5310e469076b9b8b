/**
 * The GPU side of the backend: buffers (pooled), the pipeline cache, dispatch and readback.
 * Elements are 32-bit words (f32, i32, bool as u32, bf16 as f32 values rounded to bf16), except
 * f16 on devices with `shader-f16` (2 bytes); kernels index by element either way.
 */
import type { DType } from "../dtype.ts";
import type { Gpu } from "./device.ts";
import { elemBytes } from "./wgsl.ts";

// GPUBufferUsage / GPUMapMode bits, spelled out so no runtime globals are needed.
const MAP_READ = 1, COPY_SRC = 4, COPY_DST = 8, STORAGE = 128;

/** A device buffer; `buffer` is null once released. */
export interface GBuf {
  buffer: Gpu;
  /** Capacity in bytes (pool bucket). */
  bytes: number;
}

/** Rounded up to 256 bytes; never zero-sized (WebGPU rejects empty bindings). */
const bucket = (bytes: number) => Math.max(16, Math.ceil(bytes / 256) * 256);

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

  /** Room for `n` elements of `dtype` (contents undefined). */
  alloc(n: number, dtype: DType = "f32"): GBuf {
    const bytes = bucket(n * elemBytes(dtype));
    return { buffer: this.pool.take(this.device, bytes), bytes };
  }

  free(b: GBuf): void {
    if (b.buffer === null) return;
    this.pool.give(b.buffer, b.bytes);
    b.buffer = null;
  }

  upload(data: Uint32Array | Int32Array | Float32Array | Uint16Array): GBuf {
    const b = this.alloc(Math.ceil(data.byteLength / 4));
    // writeBuffer wants a multiple of 4 bytes: an odd count of 16-bit words gets one of padding.
    const src = data.byteLength % 4 === 0 ? data : (() => {
      const p = new Uint16Array(data.length + 1);
      p.set(data as Uint16Array);
      return p;
    })();
    if (src.byteLength > 0) this.device.queue.writeBuffer(b.buffer, 0, src.buffer, src.byteOffset, src.byteLength);
    return b;
  }

  /** `n` zeroed elements of `dtype`. */
  zeros(n: number, dtype: DType = "f32"): GBuf {
    const b = this.alloc(n, dtype);
    const enc = this.device.createCommandEncoder();
    enc.clearBuffer(b.buffer, 0, b.bytes);
    this.device.queue.submit([enc.finish()]);
    return b;
  }

  /** The first `bytes` bytes of a buffer. */
  async read(b: GBuf, bytes: number): Promise<ArrayBuffer> {
    if (bytes === 0) return new ArrayBuffer(0);
    if (b.buffer === null) throw new Error("webgpu: read of a released buffer");
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.device.createBuffer({ size, usage: MAP_READ | COPY_DST });
    const enc = this.device.createCommandEncoder();
    enc.copyBufferToBuffer(b.buffer, 0, staging, 0, size);
    this.device.queue.submit([enc.finish()]);
    await staging.mapAsync(1);
    const out = staging.getMappedRange().slice(0, bytes);
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
   * `prm` (u32 parameters) as the last binding.
   */
  dispatch(code: string, bufs: GBuf[], meta: ArrayLike<number>, groups: number): void {
    this.dispatchAll([{ code, bufs, meta, groups }]);
  }

  /** Several dispatches in one compute pass and one submission, in order (each sees the last's writes). */
  dispatchAll(jobs: { code: string; bufs: GBuf[]; meta: ArrayLike<number>; groups: number }[]): void {
    const enc = this.device.createCommandEncoder();
    const pass = enc.beginComputePass();
    const metas: GBuf[] = [];
    for (const { code, bufs, meta, groups } of jobs) {
      if (groups <= 0) continue;
      const pipe = this.pipeline(code);
      const m = new Uint32Array(Math.max(meta.length, 1));
      for (let i = 0; i < meta.length; i++) m[i] = meta[i] >>> 0;
      const mb = this.upload(m);
      metas.push(mb);
      const entries = [...bufs, mb].map((b, i) => ({ binding: i, resource: { buffer: b.buffer } }));
      pass.setPipeline(pipe);
      pass.setBindGroup(0, this.device.createBindGroup({ layout: pipe.getBindGroupLayout(0), entries }));
      const y = Math.ceil(groups / MAX_GROUPS);
      pass.dispatchWorkgroups(Math.ceil(groups / y), y);
    }
    pass.end();
    this.device.queue.submit([enc.finish()]);
    for (const mb of metas) this.free(mb);
  }
}

/** WGSL: the linear workgroup id over the 2-D grid `dispatch` uses. */
export const GROUP_ID = "(wid.x + wid.y * nwg.x)";
export const ENTRY_ARGS = "@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>";
