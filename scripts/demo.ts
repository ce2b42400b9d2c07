/**
 * `deno task demo`: the main job end to end on this machine. Installs the shim into
 * a temp PREFIX (scripts/install.sh), builds an image with our oci-tar-builder,
 * starts a throwaway private containerd, imports the image, runs it with
 * `ctr run --runtime io.containerd.wasmtime.v1`, shows the answer and cleans up.
 *
 * With the wasi:http hello component it serves on 127.0.0.1:8080 (host network)
 * and is queried over HTTP; then the container is stopped with SIGTERM. A preview1
 * hello module runs as a plain command first.
 *
 * @module
 */

import { main as ociTarBuilder } from "../src/oci/builder_cli.ts";
import { startContainerd } from "../tests/e2e/harness.ts";
import { runProxy } from "../tests/e2e/ctr_util.ts";
import { fixture, runInstall } from "../tests/e2e/shim_install.ts";

const RUNTIME = "io.containerd.wasmtime.v1";
const HTTP_FIXTURE = new URL("../src/wasm/component/testdata/http_hello.wasm", import.meta.url)
  .pathname;
const ADDR = "127.0.0.1:8080";

function say(text: string): void {
  console.log(`\x1b[1m== ${text}\x1b[0m`);
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

const tmp = await Deno.makeTempDir({ prefix: "shim-demo-" });
let failed = false;
say(`installing the shim into ${tmp}/prefix (scripts/install.sh)`);
await runInstall(`${tmp}/prefix`);
say("starting a private containerd");
const cd = await startContainerd({ shimBinDir: `${tmp}/prefix/bin`, logLevel: "info" });
try {
  say("building a preview1 hello image with oci-tar-builder");
  if (
    await ociTarBuilder([
      "-n",
      "demo-hello",
      "-m",
      fixture("probe.wasm"),
      "-o",
      `${tmp}/hello.tar`,
    ]) !== 0
  ) throw new Error("oci-tar-builder failed");
  await cd.importImage(`${tmp}/hello.tar`);
  say(`ctr run --rm --runtime ${RUNTIME} demo-hello:latest demo1 /probe.wasm hello`);
  const hello = await cd.ctr([
    "run",
    "--rm",
    "--runtime",
    RUNTIME,
    "demo-hello:latest",
    "demo1",
    "/probe.wasm",
    "hello",
  ]);
  console.log(hello.stdout + hello.stderr + `(exit ${hello.code})`);
  if (hello.code !== 0) failed = true;

  if (await exists(HTTP_FIXTURE)) {
    say("building the wasi:http hello image with oci-tar-builder");
    if (
      await ociTarBuilder(["-n", "demo-http", "-m", HTTP_FIXTURE, "-o", `${tmp}/http.tar`]) !== 0
    ) throw new Error("oci-tar-builder failed");
    await cd.importImage(`${tmp}/http.tar`);
    say(`ctr run --net-host --runtime ${RUNTIME} demo-http:latest demo2 (serving on ${ADDR})`);
    const proxy = await runProxy(cd, {
      image: "demo-http:latest",
      id: "demo2",
      wasm: "/http_hello.wasm",
      addr: ADDR,
      timeoutMs: 60_000,
    });
    say(`curl ${proxy.url}/`);
    const answer = await (await fetch(`${proxy.url}/`)).text();
    console.log(answer);
    const r = await proxy.stop("SIGTERM");
    console.log(`(container exited ${r.code})`);
  } else {
    say(`no wasi:http fixture at ${HTTP_FIXTURE}: HTTP part skipped`);
  }
} catch (err) {
  console.error(`demo failed: ${(err as Error).message}`);
  failed = true;
} finally {
  say("cleaning up");
  await cd.stop();
  await runInstall(`${tmp}/prefix`, ["--uninstall"]);
  await Deno.remove(tmp, { recursive: true });
}
Deno.exit(failed ? 1 : 0);
