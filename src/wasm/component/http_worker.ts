/**
 * A wasi:http worker thread (see `http_workers.ts`): serves the proxy it is sent with
 * its own {@linkcode ProxyServer} on a shared port.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { EMPTY_SOURCE } from "./host/io.ts";
import { ProxyServer } from "./http_server.ts";
import { type FromWorker, instanceFactory, type ToWorker } from "./http_workers.ts";
import { logLine, openStdio, type Stdio } from "./stdio.ts";
import { loadGlue } from "./transpile.ts";
import { flushMetrics, metricsSummary } from "../../sys/telemetry.ts";

let server: ProxyServer | null = null;
let stdio: Stdio | null = null;

function reply(msg: FromWorker): void {
  self.postMessage(msg);
}

self.onmessage = async (e: MessageEvent<ToWorker>) => {
  const msg = e.data;
  switch (msg.type) {
    case "init": {
      try {
        const { spec } = msg;
        stdio = openStdio(spec.stdout, spec.stderr);
        const component = { instantiate: await loadGlue(spec.glue), modules: spec.modules };
        const ids = new Int32Array(spec.requestIds);
        server = new ProxyServer(
          instanceFactory(
            component,
            spec.exportName,
            {
              ...spec.host,
              stdin: EMPTY_SOURCE,
              stdout: stdio.stdout,
              stderr: stdio.stderr,
            },
            logLine,
            { recycleGrown: spec.http.recycleGrown },
          ),
          spec.http,
          logLine,
          { reusePort: true, nextId: () => Atomics.add(ids, 0, 1) + 1 },
        );
        const addr = server.listen();
        reply({ type: "listening", hostname: addr.hostname, port: addr.port });
      } catch (err) {
        reply({ type: "failed", message: (err as Error).message });
      }
      break;
    }
    case "start":
      server?.start();
      break;
    case "stop": {
      const drained = await server?.stop(msg.graceMs ?? Infinity) ?? true;
      await stdio?.close();
      // The thread's last counts go to the exporter before the thread ends.
      flushMetrics();
      reply({ type: "stopped", drained, metrics: metricsSummary() });
      break;
    }
  }
};
