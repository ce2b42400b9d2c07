/**
 * Cold start of the same preview1 module packed two ways: as a tar-layer image
 * (`ctr run --rm`) and as a Wasm OCI artifact (a raw `application/wasm` layer).
 *
 * containerd 1.6.20 cannot unpack artifacts, so an artifact container is created
 * through containerd's API (no snapshot), started with `ctr task start`, then its task
 * and container are deleted — the same steps `ctr run --rm` takes. "First run" uses
 * an image whose layer digest the shim has never seen (it reads the layer from the
 * content store over gRPC and caches it); "cached run" repeats an image.
 *
 * @module
 */

import { buildImage, MediaType } from "../src/oci/image.ts";
import { ContainerdClient, SPEC_TYPE_URL } from "../src/image/containerd/client.ts";
import type { Containerd } from "../tests/e2e/harness.ts";
import { fixture } from "../tests/e2e/shim_install.ts";
import { type BenchImages, median, type Row } from "./main.ts";

const WASM_RUNTIME = "io.containerd.wasmtime.v1";
const RUNC_RUNTIME = "io.containerd.runc.v2";
const RUNS = Number(Deno.env.get("BENCH_RUNS") ?? 10);

/** `bytes` with a custom section appended: the same program under a new digest. */
export function unique(bytes: Uint8Array, tag: string): Uint8Array {
  const name = new TextEncoder().encode(tag);
  const out = new Uint8Array(bytes.length + 3 + name.length);
  out.set(bytes);
  out.set([0x00, name.length + 1, name.length, ...name], bytes.length);
  return out;
}

let seq = 0;

async function importArtifact(cd: Containerd, tmp: string, wasm: Uint8Array): Promise<string> {
  const name = `bench-art-${++seq}`;
  const built = await buildImage({
    name,
    outPath: `${tmp}/${name}.tar`,
    asArtifact: true,
    layers: [{
      mediaType: MediaType.wasm,
      data: wasm,
      annotations: { "org.opencontainers.image.title": "probe.wasm" },
    }],
  });
  await cd.importImage(built.path, { noUnpack: true });
  await Deno.remove(built.path);
  return built.reference;
}

function spec(args: string[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({
    ociVersion: "1.0.2-dev",
    process: { terminal: false, user: { uid: 0, gid: 0 }, args, env: [], cwd: "/" },
    root: { path: "rootfs" },
    linux: { namespaces: [] },
  }));
}

async function timedArtifactRun(cd: Containerd, client: ContainerdClient, image: string) {
  const id = `bench-art-run-${++seq}`;
  const t0 = performance.now();
  await client.createContainer({
    id,
    image,
    runtime: { name: WASM_RUNTIME },
    spec: { type_url: SPEC_TYPE_URL, value: spec(["probe.wasm", "hello"]) },
    snapshotter: cd.snapshotter,
    snapshot_key: "",
  });
  const r = await cd.ctr(["task", "start", id], { stdin: "" });
  await cd.ctr(["task", "delete", id]);
  await client.deleteContainer(id);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`artifact run failed (${r.code}): ${r.stderr}`);
  return ms;
}

async function timedCtrRun(cd: Containerd, runtime: string, image: string, args: string[]) {
  const id = `bench-art-ctr-${++seq}`;
  const t0 = performance.now();
  const r = await cd.ctr(["run", "--rm", "--runtime", runtime, image, id, ...args]);
  const ms = performance.now() - t0;
  if (r.code !== 0) throw new Error(`ctr run ${image} failed (${r.code}): ${r.stderr}`);
  return ms;
}

/** The artifact rows: first and cached runs of tar image and artifact, and runc. */
export async function artifactFigures(
  cd: Containerd,
  img: BenchImages,
  tmp: string,
): Promise<Row[]> {
  const client = await ContainerdClient.connect({ address: cd.address, namespace: cd.namespace });
  try {
    const wasm = await Deno.readFile(fixture("probe.wasm"));
    // First runs: a layer digest never seen before, each time.
    const firstArt: number[] = [];
    const firstTar: number[] = [];
    const runc: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const bytes = unique(wasm, `${Date.now()}-${i}`);
      const art = await importArtifact(cd, tmp, bytes);
      firstArt.push(await timedArtifactRun(cd, client, art));
      const path = `${tmp}/first-${i}.wasm`;
      await Deno.writeFile(path, bytes);
      const tar = await buildImage({
        name: `bench-tar-${++seq}`,
        outPath: `${tmp}/tar-${i}.tar`,
        config: { entrypoint: ["/probe.wasm"] },
        layers: [{ files: [{ path: "/probe.wasm", hostPath: path }] }],
      });
      await cd.importImage(tar.path);
      firstTar.push(await timedCtrRun(cd, WASM_RUNTIME, tar.reference, ["/probe.wasm", "hello"]));
      runc.push(await timedCtrRun(cd, RUNC_RUNTIME, img.native, ["/native_hello"]));
    }
    // Cached runs: the same images again.
    const art = await importArtifact(cd, tmp, unique(wasm, `cached-${Date.now()}`));
    await timedArtifactRun(cd, client, art);
    const cachedArt: number[] = [];
    const cachedTar: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      cachedArt.push(await timedArtifactRun(cd, client, art));
      cachedTar.push(await timedCtrRun(cd, WASM_RUNTIME, img.wasm, ["/probe.wasm", "hello"]));
      runc.push(await timedCtrRun(cd, RUNC_RUNTIME, img.native, ["/native_hello"]));
    }
    const b = median(runc);
    const row = (figure: string, xs: number[]): Row => ({
      figure,
      ours: `${median(xs).toFixed(0)} ms`,
      baseline: `${b.toFixed(0)} ms (runc, native static hello)`,
      ratio: (median(xs) / b).toFixed(2),
      target: "report",
    });
    return [
      row(`cold start, tar-layer image, first run of a new digest (median of ${RUNS})`, firstTar),
      row(`cold start, tar-layer image, cached run (median of ${RUNS})`, cachedTar),
      row(
        `cold start, Wasm artifact (API create + ctr task start), first run: layer read over gRPC (median of ${RUNS})`,
        firstArt,
      ),
      row(`cold start, Wasm artifact, cached run (median of ${RUNS})`, cachedArt),
    ];
  } finally {
    client.close();
  }
}
