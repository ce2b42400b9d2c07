/**
 * The server side of `bench/per_request.ts`: serves one wasi:http proxy component
 * exactly as a guest runner does (`prepare` from `src/wasm/component/mod.ts`: the same
 * transpile cache, lean glue, worker threads and `http_worker.ts`), without containerd,
 * so that the process under load is only the serving one. Run with the runners' Deno
 * flags (`--unstable-net` and their V8 options, see `src/runner/spawn.ts`).
 *
 * `deno run -A --unstable-net bench/per_request_server.ts <component.wasm> <cache dir>`
 * prints `listening <port>` on stdout once it serves on 127.0.0.1, and serves until
 * SIGINT. The container's environment is this process's `BENCH_GUEST_ENV` (`K=V`
 * lines), e.g. to set `WASMTIME_HTTP_PROXY_WORKERS`.
 *
 * `… per_request_server.ts ceiling <threads>` serves the hello's text from plain
 * `Deno.serve`s instead, on that many worker threads sharing the port as the runner's
 * do: the ceiling of the same thread layout, without any wasm.
 *
 * @module
 */

import { prepare } from "../src/wasm/component/mod.ts";

/** The line the driver waits for. */
export const LISTENING = "listening";
/** The first argument that serves the ceiling instead of a component. */
export const CEILING = "ceiling";
const HELLO = "Hello, this is your first wasi:http/proxy world!\n";

/** Serves {@linkcode HELLO} on `threads` workers sharing a port; resolves with the port. */
async function ceiling(threads: number): Promise<number> {
  let port = 0;
  for (let i = 0; i < threads; i++) {
    const worker = new Worker(import.meta.url, { type: "module" });
    port = await new Promise<number>((resolve) => {
      worker.onmessage = (e: MessageEvent<number>) => resolve(e.data);
      worker.postMessage(port);
    });
  }
  return port;
}

if ("WorkerGlobalScope" in globalThis) {
  // A ceiling thread: serves on the port it is given (0: a new one), answers with it.
  self.onmessage = (e: MessageEvent<number>) => {
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: e.data, reusePort: true, onListen: () => {} },
      () => new Response(HELLO),
    );
    self.postMessage(server.addr.port);
  };
} else if (import.meta.main && Deno.args[0] === CEILING) {
  console.log(`${LISTENING} ${await ceiling(Number(Deno.args[1] ?? 1))}`);
  await new Promise((resolve) => Deno.addSignalListener("SIGINT", () => resolve(null)));
  Deno.exit(0);
} else if (import.meta.main) {
  const [wasm, cacheDir] = Deno.args;
  if (!wasm || !cacheDir) {
    console.error("usage: per_request_server.ts <component.wasm> <cache dir>");
    Deno.exit(2);
  }
  const root = await Deno.makeTempDir({ prefix: "bench-per-request-root-" });
  const env = [
    "WASMTIME_HTTP_PROXY_SOCKET_ADDR=127.0.0.1:0",
    ...(Deno.env.get("BENCH_GUEST_ENV") ?? "").split("\n").filter((l) => l.includes("=")),
  ];
  try {
    const prepared = await prepare({
      id: "bench-per-request",
      rootfs: root,
      args: ["/app.wasm"],
      env,
      cwd: "/",
      stdin: "",
      stdout: "",
      stderr: "",
      cacheDir,
      hostPath: wasm,
      guestPath: "/app.wasm",
      func: "_start",
    }, await Deno.readFile(wasm));
    console.log(`${LISTENING} ${prepared.addr!.port}`);
    await prepared.run();
  } finally {
    await Deno.remove(root, { recursive: true });
  }
}
