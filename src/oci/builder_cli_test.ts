import assert from "node:assert/strict";
import { main, USAGE } from "./builder_cli.ts";
import { ANNOTATION_IMAGE_NAME, MediaType, sha256Digest } from "./image.ts";
import { readTar, writeTar } from "./tar.ts";

const dec = new TextDecoder();
const MODULE = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
const COMPONENT = new Uint8Array([0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]);
const PROBE = new URL("../../tests/fixtures/built/probe.wasm", import.meta.url).pathname;

/** Runs `main` with console output captured. */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const { log, error } = console;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    const code = await main(args);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

async function withTempDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "oci-cli-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function ls(dir: string): Promise<string[]> {
  return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
}

// deno-lint-ignore no-explicit-any
type Json = any;

function openImage(
  tar: Uint8Array,
): { index: Json; manifest: Json; config: Json; blob: (d: string) => Uint8Array } {
  const files = new Map(readTar(tar).map((e) => [e.path, e.data]));
  const blob = (d: string) => files.get(`blobs/sha256/${d.slice(7)}`)!;
  const index = JSON.parse(dec.decode(files.get("index.json")!));
  const manifest = JSON.parse(dec.decode(blob(index.manifests[0].digest)));
  const config = JSON.parse(dec.decode(blob(manifest.config.digest)));
  return { index, manifest, config, blob };
}

Deno.test("oci-tar-builder --help", async () => {
  const r = await cli(["--help"]);
  assert.equal(r.code, 0);
  assert.equal(r.out, USAGE);
  for (
    const flag of [
      "--name",
      "--repo",
      "--tag",
      "--module",
      "--layer",
      "--components",
      "--as-artifact",
      "--out-path",
    ]
  ) {
    assert.ok(USAGE.includes(flag), flag);
  }
});

Deno.test("oci-tar-builder: --module image into an output directory", async () => {
  await withTempDir(async (dir) => {
    const r = await cli([
      "-n",
      "probe",
      "-r",
      "example.com/e2e",
      "-t",
      "v1",
      "-m",
      PROBE,
      "-o",
      dir,
    ]);
    assert.equal(r.code, 0, r.err);
    assert.match(
      r.out,
      /wrote .*\/probe\.tar: example\.com\/e2e\/probe:v1 \(manifest sha256:[0-9a-f]{64}\)/,
    );
    assert.deepEqual(await ls(dir), ["probe.tar"]);
    const { index, manifest, config, blob } = openImage(await Deno.readFile(`${dir}/probe.tar`));
    assert.equal(index.manifests[0].annotations[ANNOTATION_IMAGE_NAME], "example.com/e2e/probe:v1");
    assert.equal(config.os, "wasip1");
    assert.equal(config.architecture, "wasm");
    assert.deepEqual(config.config.Entrypoint, ["/probe.wasm"]);
    const layer = readTar(blob(manifest.layers[0].digest));
    const mod = layer.find((e) => e.path === "probe.wasm")!;
    assert.deepEqual(mod.data, await Deno.readFile(PROBE));
    assert.equal(mod.mode, 0o755);
  });
});

Deno.test("oci-tar-builder: same inputs give the same bytes (reproducible digest)", async () => {
  await withTempDir(async (dir) => {
    const args = ["--name", "probe", "--module", PROBE];
    assert.equal((await cli([...args, "--out-path", `${dir}/a.tar`])).code, 0);
    // Another copy of the module with another mtime and mode: same image.
    await Deno.copyFile(PROBE, `${dir}/probe.wasm`);
    await Deno.chmod(`${dir}/probe.wasm`, 0o600);
    await Deno.utime(`${dir}/probe.wasm`, 12345, 12345);
    const r = await cli([
      "--name",
      "probe",
      "--module",
      `${dir}/probe.wasm`,
      "--out-path",
      `${dir}/b.tar`,
    ]);
    assert.equal(r.code, 0, r.err);
    assert.equal(
      await sha256Digest(await Deno.readFile(`${dir}/a.tar`)),
      await sha256Digest(await Deno.readFile(`${dir}/b.tar`)),
    );
  });
});

Deno.test("oci-tar-builder: --as-artifact with a module", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/m.wasm`, MODULE);
    const r = await cli(["-n", "m", "-a", "-m", `${dir}/m.wasm`, "-o", `${dir}/out.tar`]);
    assert.equal(r.code, 0, r.err);
    const { manifest, config, blob } = openImage(await Deno.readFile(`${dir}/out.tar`));
    assert.equal(manifest.config.mediaType, MediaType.wasmConfig);
    assert.deepEqual(manifest.layers.map((l: { mediaType: string }) => l.mediaType), [
      MediaType.wasm,
    ]);
    assert.deepEqual(blob(manifest.layers[0].digest), MODULE);
    assert.equal(config.os, "wasip1");
    assert.deepEqual(config.layerDigests, [manifest.layers[0].digest]);
  });
});

Deno.test("oci-tar-builder: --wasm-layer-type picks the raw layer media type; layers are titled", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/m.wasm`, MODULE);
    await Deno.mkdir(`${dir}/c`);
    await Deno.writeFile(`${dir}/c/a.wasm`, COMPONENT);
    for (const type of [MediaType.wasmComponentLayer, MediaType.wasmContentLayer]) {
      const r = await cli([
        "-n",
        "m",
        "-a",
        "-w",
        type,
        "-m",
        `${dir}/m.wasm`,
        "-c",
        `${dir}/c`,
        "-l",
        `${MediaType.wasm}=${dir}/m.wasm`,
        "-o",
        `${dir}/out.tar`,
      ]);
      assert.equal(r.code, 0, r.err);
      const { manifest } = openImage(await Deno.readFile(`${dir}/out.tar`));
      assert.deepEqual(
        manifest.layers.map((l: { mediaType: string; annotations: Record<string, string> }) => [
          l.mediaType,
          l.annotations["org.opencontainers.image.title"],
        ]),
        [[type, "m.wasm"], [MediaType.wasm, "m.wasm"], [type, "a.wasm"]],
      );
    }
    const bad = await cli(["-n", "m", "-a", "-w", "application/json", "-m", `${dir}/m.wasm`]);
    assert.equal(bad.code, 2);
    assert.match(
      bad.err,
      /--wasm-layer-type application\/json: expected one of application\/wasm, /,
    );
  });
});

Deno.test("oci-tar-builder: --components adds every .wasm (sorted); artifact of components is wasip2", async () => {
  await withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/c`);
    await Deno.writeFile(`${dir}/c/b.wasm`, COMPONENT);
    await Deno.writeFile(`${dir}/c/a.wasm`, COMPONENT);
    await Deno.writeTextFile(`${dir}/c/notes.txt`, "ignored");
    let r = await cli(["-n", "comp", "-c", `${dir}/c`, "-o", `${dir}/img.tar`]);
    assert.equal(r.code, 0, r.err);
    let img = openImage(await Deno.readFile(`${dir}/img.tar`));
    assert.deepEqual(
      img.manifest.layers.map((l: { mediaType: string; annotations: Record<string, string> }) => [
        l.mediaType,
        l.annotations["org.opencontainers.image.title"],
      ]),
      [[MediaType.wasmComponentLayer, "a.wasm"], [MediaType.wasmComponentLayer, "b.wasm"]],
    );
    assert.equal(img.config.os, "wasip1");
    r = await cli(["-n", "comp", "-a", "-c", `${dir}/c`, "-o", `${dir}/art.tar`]);
    assert.equal(r.code, 0, r.err);
    img = openImage(await Deno.readFile(`${dir}/art.tar`));
    assert.equal(img.config.os, "wasip2");
    assert.ok(
      img.manifest.layers.every((l: { mediaType: string }) => l.mediaType === MediaType.wasm),
    );
  });
});

Deno.test("oci-tar-builder: --layer with a file, a tar and a directory", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeFile(`${dir}/x.wasm`, MODULE);
    await Deno.writeFile(
      `${dir}/extra.tar`,
      writeTar([{ path: "etc/motd", data: new TextEncoder().encode("hi") }]),
    );
    await Deno.mkdir(`${dir}/root/data`, { recursive: true });
    await Deno.writeTextFile(`${dir}/root/data/f.txt`, "f");
    const r = await cli([
      "-n",
      "layers",
      "-l",
      `application/wasm=${dir}/x.wasm`,
      "--layer",
      `${MediaType.layerTar}=${dir}/extra.tar`,
      "--layer",
      `${MediaType.layerTarGzip}=${dir}/root`,
      "-o",
      `${dir}/out.tar`,
    ]);
    assert.equal(r.code, 0, r.err);
    const { manifest, blob } = openImage(await Deno.readFile(`${dir}/out.tar`));
    assert.deepEqual(
      manifest.layers.map((l: { mediaType: string }) => l.mediaType),
      [MediaType.wasm, MediaType.layerTar, MediaType.layerTarGzip],
    );
    assert.deepEqual(blob(manifest.layers[0].digest), MODULE);
    assert.deepEqual(blob(manifest.layers[1].digest), await Deno.readFile(`${dir}/extra.tar`));
  });
});

Deno.test("oci-tar-builder: bad inputs exit 2 with a reason and write nothing", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/not_wasm.wasm`, "this is not wasm");
    await Deno.writeFile(`${dir}/ok.wasm`, MODULE);
    await Deno.mkdir(`${dir}/empty`);
    await Deno.mkdir(`${dir}/out`);
    await Deno.mkdir(`${dir}/out/taken.tar`); // a directory where the archive would go
    const out = `${dir}/out`;
    const cases: [string[], RegExp][] = [
      [["-m", `${dir}/ok.wasm`, "-o", out], /--name is required/],
      [["-n", "x", "-o", out], /nothing to package/],
      [
        ["-n", "x", "-m", `${dir}/missing.wasm`, "-o", out],
        /module .*missing\.wasm does not exist/,
      ],
      [
        ["-n", "x", "-m", `${dir}/not_wasm.wasm`, "-o", out],
        /is not WebAssembly: it does not start with the magic bytes/,
      ],
      [["-n", "x", "-m", dir, "-o", out], /is not a regular file/],
      [["-n", "Bad_Name", "-m", `${dir}/ok.wasm`, "-o", out], /invalid image name "Bad_Name"/],
      [["-n", "x", "-t", "bad:tag", "-m", `${dir}/ok.wasm`, "-o", out], /invalid tag "bad:tag"/],
      [["-n", "x", "-r", "Bad Repo", "-m", `${dir}/ok.wasm`, "-o", out], /invalid repository/],
      [
        ["-n", "x", "-m", `${dir}/ok.wasm`, "-o", `${dir}/nope/x.tar`],
        /output directory .*nope does not exist/,
      ],
      [
        ["-n", "x", "-m", `${dir}/ok.wasm`, "-o", `${dir}/nope/`],
        /output directory .*nope\/ does not exist/,
      ],
      [["-n", "x", "-m", `${dir}/ok.wasm`, "--bogus", "-o", out], /Unknown option '--bogus'/],
      [["-n", "x", "-m", `${dir}/ok.wasm`, "stray", "-o", out], /positional/i],
      [["-n", "x", "-l", `${dir}/ok.wasm`, "-o", out], /expected TYPE=PATH/],
      [["-n", "x", "-l", `nonsense=${dir}/ok.wasm`, "-o", out], /not of the form type\/subtype/],
      [["-n", "x", "-l", `application/wasm=${dir}/missing`, "-o", out], /does not exist/],
      [["-n", "x", "-l", `application/wasm=${dir}/not_wasm.wasm`, "-o", out], /is not WebAssembly/],
      [
        ["-n", "x", "-l", `application/wasm=${dir}/empty`, "-o", out],
        /a directory becomes a tar layer/,
      ],
      [
        ["-n", "x", "-l", `${MediaType.layerTarGzip}=${dir}/not_wasm.wasm`, "-o", out],
        /is not gzip data/,
      ],
      [
        ["-n", "x", "-a", "-l", `${MediaType.layerTar}=${dir}/empty`, "-o", out],
        /takes only wasm layers/,
      ],
      [["-n", "x", "-c", `${dir}/empty`, "-o", out], /holds no \.wasm files/],
      [["-n", "x", "-c", `${dir}/ok.wasm`, "-o", out], /is not a directory/],
      [["-n", "taken", "-m", `${dir}/ok.wasm`, "-o", out], /cannot write .*taken\.tar/],
    ];
    for (const [args, re] of cases) {
      const r = await cli(args);
      assert.equal(r.code, 2, `${args.join(" ")}: exit code`);
      assert.match(r.err, /^oci-tar-builder: /, args.join(" "));
      assert.match(r.err, re, args.join(" "));
      assert.equal(r.out, "", args.join(" "));
      assert.deepEqual(await ls(out), ["taken.tar"], `${args.join(" ")} left output behind`);
    }
  });
});

Deno.test("oci-tar-builder: runs as a command (import.meta.main)", async () => {
  await withTempDir(async (dir) => {
    const script = new URL("./builder_cli.ts", import.meta.url).pathname;
    let r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "-n", "probe", "-m", PROBE, "-o", dir],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(r.code, 0, dec.decode(r.stderr));
    assert.deepEqual(await ls(dir), ["probe.tar"]);
    r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", script, "-n", "probe", "-m", `${dir}/nope.wasm`, "-o", dir],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(r.code, 2);
    assert.match(dec.decode(r.stderr), /^oci-tar-builder: module .*nope\.wasm does not exist\n$/);
  });
});
