/**
 * containerd-shim-wasmtime-v1: a containerd shim (runtime v2) that runs
 * WebAssembly. This file only dispatches; each action imports what it needs, so
 * the short-lived `start` and `delete` stay small.
 *
 * @module
 */

import { FlagError, parseFlags } from "./src/shim/flags.ts";

async function main(argv: string[]): Promise<number> {
  let flags;
  try {
    flags = parseFlags(argv);
  } catch (err) {
    if (!(err instanceof FlagError)) throw err;
    console.error(`containerd-shim-wasmtime-v1: ${err.message}`);
    return 2;
  }
  if (flags.version) {
    const { versionText } = await import("./src/shim/info.ts");
    await Deno.stdout.write(new TextEncoder().encode(versionText()));
    return 0;
  }
  if (flags.info) {
    const { runtimeInfo } = await import("./src/shim/info.ts");
    await new Response(Deno.stdin.readable).arrayBuffer().catch(() => {});
    await Deno.stdout.write(runtimeInfo());
    return 0;
  }
  switch (flags.action) {
    case "start":
    case "delete":
      return (await import("./src/shim/lifecycle_main.ts")).runLifecycle(flags);
    case "":
      return (await import("./src/shim/daemon.ts")).runServer(flags);
    case "guest":
      return (await import("./src/wasm/guest_main.ts")).runGuestMain(flags.rest);
    case "oci-tar-builder":
      return (await import("./src/oci/builder_cli.ts")).main(flags.rest);
    default:
      console.error(
        `containerd-shim-wasmtime-v1: unknown action "${flags.action}" ` +
          `(expected start, delete, guest or oci-tar-builder)`,
      );
      return 2;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
