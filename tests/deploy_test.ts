/**
 * deploy/: the RuntimeClass and the installer DaemonSet agree with each other, with
 * scripts/install.sh (the runtime name it writes into containerd's config) and with
 * deploy/Dockerfile.installer; and the DaemonSet's script restarts containerd only
 * when the config changed (run here with a fake `nsenter`).
 *
 * The manifests are read with the small YAML reader below: there is no YAML package
 * among the dependencies, and it is strict, so the manifests stay within what it reads.
 */

import assert from "node:assert/strict";
import { spawnLogged } from "./spawn.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();

// --- a strict reader for the block-style YAML subset Kubernetes manifests use -----

type Yaml = null | boolean | number | string | Yaml[] | { [key: string]: Yaml };

/**
 * One YAML document of block mappings and sequences (`key: value`, `- item`,
 * `- key: value`), comments, `|` / `|-` block scalars and scalars: plain, quoted,
 * booleans, numbers, and JSON-style flow collections. Anything else throws.
 */
function parseYaml(src: string): Yaml {
  const lines = src.split("\n").map((l) => l.replace(/\r$/, ""));
  let i = 0;
  const fail = (why: string): never => {
    throw new Error(`YAML line ${i + 1}: ${why}: ${JSON.stringify(lines[i])}`);
  };
  const indentOf = (l: string) => l.length - l.trimStart().length;
  const skipBlank = () => {
    while (i < lines.length && (/^\s*(#.*)?$/.test(lines[i]) || lines[i] === "---")) i++;
  };
  const isItem = (t: string) => t === "-" || t.startsWith("- ");
  const KEY =
    /^("(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'#\-\[\]{}:,][^:#]*?|-[^\s:#][^:#]*?)\s*:(?:\s+(.*))?$/;

  function scalar(raw: string): Yaml {
    let s = raw.trim();
    const dq = s.match(/^("(?:[^"\\]|\\.)*")\s*(#.*)?$/);
    if (dq) return JSON.parse(dq[1]) as string;
    const sq = s.match(/^'((?:[^']|'')*)'\s*(#.*)?$/);
    if (sq) return sq[1].replaceAll("''", "'");
    if (/^["']/.test(s)) fail("bad quoted string");
    if (s.startsWith("[") || s.startsWith("{")) return JSON.parse(s) as Yaml;
    s = s.replace(/\s+#.*$/, "");
    if (s === "true" || s === "false") return s === "true";
    if (s === "null" || s === "~" || s === "") return null;
    if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
    if (/^[&*!|>%@`]/.test(s)) fail("unsupported YAML syntax");
    return s;
  }

  function blockScalar(parentIndent: number, style: string): string {
    const body: string[] = [];
    let indent = -1;
    while (i < lines.length) {
      const l = lines[i];
      if (l.trim() === "") {
        body.push("");
        i++;
        continue;
      }
      const ind = indentOf(l);
      if (ind <= parentIndent) break;
      if (indent < 0) indent = ind;
      if (ind < indent) fail("block scalar line indented less than its first line");
      body.push(l.slice(indent));
      i++;
    }
    while (body.length > 0 && body[body.length - 1] === "") body.pop();
    const text = body.join("\n");
    return style === "|-" ? text : `${text}\n`;
  }

  /** The value after `key:` or `-` on line i (already consumed), at `indent`. */
  function value(rest: string | undefined, indent: number): Yaml {
    if (rest === undefined || rest.trim() === "" || /^\s*#/.test(rest)) {
      skipBlank();
      if (i >= lines.length) return null;
      const ind = indentOf(lines[i]);
      if (ind > indent) return block(ind);
      if (ind === indent && isItem(lines[i].slice(ind))) return sequence(ind);
      return null;
    }
    const r = rest.trim();
    if (r === "|" || r === "|-") return blockScalar(indent, r);
    return scalar(r);
  }

  function sequence(indent: number): Yaml[] {
    const out: Yaml[] = [];
    for (;;) {
      skipBlank();
      if (i >= lines.length || indentOf(lines[i]) < indent) return out;
      const ind = indentOf(lines[i]);
      const text = lines[i].slice(ind);
      if (ind !== indent || !isItem(text)) {
        if (ind > indent) fail("unexpected indentation in a sequence");
        return out;
      }
      const rest = text.slice(1).trimStart();
      if (KEY.test(rest)) {
        // `- key: value`: a mapping whose keys sit where `key` starts.
        const col = ind + (text.length - rest.length);
        lines[i] = " ".repeat(col) + rest;
        out.push(mapping(col));
      } else {
        i++;
        out.push(value(rest, ind));
      }
    }
  }

  function mapping(indent: number): { [key: string]: Yaml } {
    const out: { [key: string]: Yaml } = {};
    for (;;) {
      skipBlank();
      if (i >= lines.length) return out;
      const ind = indentOf(lines[i]);
      if (ind < indent) return out;
      if (ind > indent) fail("unexpected indentation in a mapping");
      const text = lines[i].slice(ind);
      if (isItem(text)) return out;
      const m = text.match(KEY);
      if (!m) fail("expected `key: value`");
      const key = scalar(m![1]);
      if (typeof key !== "string") fail("non-string key");
      if (Object.hasOwn(out, key as string)) fail(`duplicate key ${key}`);
      i++;
      out[key as string] = value(m![2], ind);
    }
  }

  function block(indent: number): Yaml {
    skipBlank();
    return isItem(lines[i].slice(indent)) ? sequence(indent) : mapping(indent);
  }

  skipBlank();
  const doc = i < lines.length ? block(indentOf(lines[i])) : null;
  skipBlank();
  if (i < lines.length) fail("content after the document");
  return doc;
}

// --- helpers -------------------------------------------------------------------------

type Obj = { [key: string]: Yaml };

/** The value at a dotted path (`a.b.0.c`); throws naming the path if absent. */
function at(doc: Yaml, path: string): Yaml {
  let v: Yaml = doc;
  for (const part of path.split(".")) {
    if (Array.isArray(v) && /^\d+$/.test(part)) v = v[Number(part)];
    else if (v !== null && typeof v === "object" && !Array.isArray(v) && Object.hasOwn(v, part)) {
      v = v[part];
    } else throw new Error(`no ${path} (stopped at ${part})`);
  }
  return v;
}

function obj(v: Yaml, what: string): Obj {
  assert.ok(v !== null && typeof v === "object" && !Array.isArray(v), `${what} is not a mapping`);
  return v as Obj;
}

function list(v: Yaml, what: string): Obj[] {
  assert.ok(Array.isArray(v), `${what} is not a sequence`);
  return v.map((e, n) => obj(e, `${what}[${n}]`));
}

function readYaml(rel: string): Obj {
  return obj(parseYaml(Deno.readTextFileSync(`${ROOT}${rel}`)), rel);
}

/** A `NAME=value` assignment at the top of scripts/install.sh. */
function installShVar(name: string): string {
  const m = Deno.readTextFileSync(`${ROOT}scripts/install.sh`).match(
    new RegExp(`^${name}=(\\S+)$`, "m"),
  );
  assert.ok(m, `scripts/install.sh has no ${name}=`);
  return m[1];
}

const LABEL = "wasmtime.containerd.io/enabled";
const INSTALLER = "/opt/containerd-shim-wasmtime/scripts/install.sh";

function daemonSet() {
  const ds = readYaml("deploy/daemonset.yaml");
  const pod = obj(at(ds, "spec.template.spec"), "pod spec");
  const [container, ...others] = list(pod.containers, "containers");
  assert.deepEqual(others, []);
  const env = Object.fromEntries(
    list(container.env, "env").map((e) => [e.name as string, e.value as string]),
  );
  const script = at(container, "args.0");
  assert.equal(typeof script, "string");
  return { ds, pod, container, env, script: script as string };
}

// --- the YAML reader itself ------------------------------------------------------------

Deno.test("parseYaml reads the block subset and refuses the rest", () => {
  assert.deepEqual(
    parseYaml(
      [
        "# c",
        "a: 1",
        'b: "x: y" # c',
        "c:",
        "  - p: q",
        '    r: [1, "s"]',
        "  - plain text",
        "d:",
        "- 'it''s'",
        "e: |",
        "  line 1",
        "",
        "    line 2",
        "f: true",
        "g:",
        "  h: ~",
      ].join("\n"),
    ),
    {
      a: 1,
      b: "x: y",
      c: [{ p: "q", r: [1, "s"] }, "plain text"],
      d: ["it's"],
      e: "line 1\n\n  line 2\n",
      f: true,
      g: { h: null },
    },
  );
  assert.throws(() => parseYaml("a: 1\na: 2\n"), /duplicate key a/);
  assert.throws(() => parseYaml("a: 1\n   b: 2\n"), /unexpected indentation/);
  assert.throws(() => parseYaml("a: &anchor 1\n"), /unsupported/);
});

// --- the manifests -------------------------------------------------------------------

Deno.test("deploy/runtimeclass.yaml: handler is install.sh's runtime name, on labelled nodes", () => {
  const rc = readYaml("deploy/runtimeclass.yaml");
  assert.equal(rc.apiVersion, "node.k8s.io/v1");
  assert.equal(rc.kind, "RuntimeClass");
  assert.equal(at(rc, "metadata.name"), "wasmtime");
  assert.equal(rc.handler, installShVar("RUNTIME_NAME"));
  assert.deepEqual(at(rc, "scheduling.nodeSelector"), { [LABEL]: "true" });
});

Deno.test("deploy/daemonset.yaml: a privileged installer on the RuntimeClass's nodes", () => {
  const { ds, pod, container, env, script } = daemonSet();
  assert.equal(ds.apiVersion, "apps/v1");
  assert.equal(ds.kind, "DaemonSet");
  assert.equal(at(ds, "metadata.namespace"), "kube-system");
  const selector = obj(at(ds, "spec.selector.matchLabels"), "matchLabels");
  const labels = obj(at(ds, "spec.template.metadata.labels"), "pod labels");
  for (const [k, v] of Object.entries(selector)) assert.equal(labels[k], v, `pod label ${k}`);
  // The same nodes as the RuntimeClass's pods.
  const rc = readYaml("deploy/runtimeclass.yaml");
  assert.deepEqual(pod.nodeSelector, at(rc, "scheduling.nodeSelector"));
  // nsenter -t 1 reaches the node's PID 1 only in the host's PID namespace.
  assert.equal(pod.hostPID, true);
  assert.equal(at(container, "securityContext.privileged"), true);

  // The node's prefix and containerd config dir are mounted at the same paths.
  const volumes = new Map(list(pod.volumes, "volumes").map((v) => [v.name, v]));
  const mounts = list(container.volumeMounts, "volumeMounts");
  const hostPathOfMount = (dir: string) => {
    const m = mounts.find((m) => m.mountPath === dir);
    assert.ok(m, `no volumeMount at ${dir}`);
    const v = volumes.get(m.name);
    assert.ok(v, `no volume ${m.name}`);
    return at(v, "hostPath.path");
  };
  assert.equal(hostPathOfMount(env.PREFIX), env.PREFIX);
  const configDir = env.CONTAINERD_CONFIG.replace(/\/[^/]+$/, "");
  assert.equal(hostPathOfMount(configDir), configDir);
  assert.match(env.CONTAINERD, /^nsenter -t 1 -m -- containerd$/);

  // The script: install.sh from the image, containerd restarted through the host.
  assert.ok(script.includes(`${INSTALLER} --configure-containerd --containerd-config "$config"`));
  assert.ok(script.includes("nsenter -t 1 -m -u -i -n -p -- systemctl restart containerd"));
  const syntax = new Deno.Command("bash", { args: ["-n", "-c", script] }).outputSync();
  assert.equal(syntax.code, 0, decoder.decode(syntax.stderr));
});

Deno.test("deploy/Dockerfile.installer provides what the DaemonSet runs; README builds its image", () => {
  const docker = Deno.readTextFileSync(`${ROOT}deploy/Dockerfile.installer`);
  const { container, env } = daemonSet();
  const appDir = INSTALLER.replace(/\/scripts\/install\.sh$/, "");
  assert.match(docker, new RegExp(`^COPY \\. ${appDir}$`, "m"));
  assert.match(docker, new RegExp(`^ENTRYPOINT \\["${INSTALLER}"\\]$`, "m"));
  assert.match(docker, /apt-get install [^\n]*\n?[^\n]*\bnpm\b[^\n]*\butil-linux\b/);
  // Nothing the image needs may live where the node's prefix is mounted.
  for (const m of docker.matchAll(/^COPY (?:--from=\S+ )?\S+ (\S+)$/gm)) {
    assert.ok(!m[1].startsWith(`${env.PREFIX}/`), `${m[1]} is hidden by the ${env.PREFIX} mount`);
  }
  const image = (container.image as string).replace(/:[^:/]+$/, "");
  const readme = Deno.readTextFileSync(`${ROOT}deploy/README.md`);
  assert.ok(readme.includes(`-f deploy/Dockerfile.installer`));
  assert.ok(readme.includes(`/${image}:TAG`), `deploy/README.md does not build ${image}`);
});

// --- the DaemonSet's script, run -------------------------------------------------------

/**
 * Runs the DaemonSet's script with install.sh from this checkout, a temp PREFIX and
 * config, and a fake `nsenter` that logs what it is asked and runs containerd itself
 * (validation) but not systemctl. Sends SIGTERM once the script says it sleeps, as
 * Kubernetes does when it deletes the pod, and returns after the script has exited.
 */
async function runDaemonSetScript(
  prefix: string,
  config: string,
  fakeBin: string,
): Promise<{ code: number; output: string }> {
  const { env, script } = daemonSet();
  assert.ok(script.includes(INSTALLER));
  const run = await spawnLogged("bash", [
    "-c",
    script.replace(INSTALLER, `${ROOT}scripts/install.sh`),
  ], {
    env: {
      ...env,
      PREFIX: prefix,
      CONTAINERD_CONFIG: config,
      PATH: `${fakeBin}:${Deno.env.get("PATH")}`,
      DENO: Deno.execPath(),
    },
    timeoutMs: 120_000,
  });
  await run.waitFor("installer: done; sleeping").catch(() => {});
  run.signal("SIGTERM");
  const { code, output, leftover, timedOut } = await run.finished;
  assert.ok(!timedOut, `the script did not end within 120 s:\n${output}`);
  // A process the script left would keep the pod's stdout (and the node) busy.
  assert.deepEqual(leftover, [], `the script left processes running:\n${output}`);
  return { code, output };
}

Deno.test("the DaemonSet's script restarts containerd once, only when the config changed", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "shim-daemonset-" });
  try {
    const fakeBin = `${tmp}/fakebin`;
    const log = `${tmp}/nsenter.log`;
    await Deno.mkdir(fakeBin);
    await Deno.writeTextFile(
      `${fakeBin}/nsenter`,
      `#!/bin/bash
echo "$*" >> ${JSON.stringify(log)}
while [ $# -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift
case "$1" in
  containerd) exec "$@" ;;
  systemctl) exit 0 ;;
  *) echo "fake nsenter: unexpected command $*" >&2; exit 1 ;;
esac
`,
    );
    await Deno.chmod(`${fakeBin}/nsenter`, 0o755);
    const config = `${tmp}/etc/containerd/config.toml`;
    const restarts = async () =>
      (await Deno.readTextFile(log)).split("\n").filter((l) => l.includes("systemctl")).length;

    const first = await runDaemonSetScript(`${tmp}/prefix`, config, fakeBin);
    assert.equal(first.code, 0, first.output);
    assert.match(first.output, /config\.toml changed: restarting containerd/);
    assert.match(first.output, /added the runtime wasmtime/);
    assert.ok(
      (await Deno.readTextFile(config)).includes(`runtime_type = "io.containerd.wasmtime.v1"`),
    );
    assert.equal(await restarts(), 1);
    const logText = await Deno.readTextFile(log);
    assert.match(logText, /^-t 1 -m -- containerd --version$/m);
    assert.match(logText, /^-t 1 -m -u -i -n -p -- systemctl restart containerd$/m);

    const second = await runDaemonSetScript(`${tmp}/prefix`, config, fakeBin);
    assert.equal(second.code, 0, second.output);
    assert.match(second.output, /unchanged: containerd not restarted/);
    assert.equal(await restarts(), 1);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
