/**
 * deploy/: the RuntimeClass and the installer DaemonSet agree with each other, with
 * scripts/install.sh (the runtime name it writes into containerd's config), with the
 * image scripts/installer_image.ts builds and with deploy/rbac.yaml; and the
 * DaemonSet's script (deploy/installer.sh) restarts containerd only when the config
 * changed (run here with a fake `nsenter`). tests/e2e/installer_image_test.ts runs
 * the image itself.
 *
 * The manifests are read with the small YAML reader below: there is no YAML package
 * among the dependencies, and it is strict, so the manifests stay within what it reads.
 */

import assert from "node:assert/strict";
import { spawnLogged } from "./spawn.ts";
import { APP_DIR, APPLETS, DEFAULT_REPO, IMAGE_NAME } from "../scripts/installer_image.ts";
import { VERSION } from "../src/shim/version.ts";

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
const SCRIPT = "deploy/installer.sh";

function daemonSet() {
  const ds = readYaml("deploy/daemonset.yaml");
  const pod = obj(at(ds, "spec.template.spec"), "pod spec");
  const [container, ...others] = list(pod.containers, "containers");
  assert.deepEqual(others, []);
  const env = Object.fromEntries(
    list(container.env, "env").filter((e) => "value" in e)
      .map((e) => [e.name as string, e.value as string]),
  );
  const script = Deno.readTextFileSync(`${ROOT}${SCRIPT}`);
  return { ds, pod, container, env, script };
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

  // The node's prefix and the presets' directories are mounted at the same paths.
  const volumes = new Map(list(pod.volumes, "volumes").map((v) => [v.name, v]));
  const mounts = list(container.volumeMounts, "volumeMounts");
  const hostPathOfMount = (dir: string) => {
    const m = mounts.find((m) => m.mountPath === dir);
    assert.ok(m, `no volumeMount at ${dir}`);
    const v = volumes.get(m.name);
    assert.ok(v, `no volume ${m.name}`);
    return at(v, "hostPath.path");
  };
  for (
    const dir of [
      env.PREFIX,
      "/etc/containerd",
      "/var/lib/rancher",
      "/etc/k0s",
      "/var/snap/microk8s",
    ]
  ) {
    assert.equal(hostPathOfMount(dir), dir);
  }
  assert.match(env.CONTAINERD, /^nsenter -t 1 -m -- containerd$/);
  assert.equal(env.SYSTEMCTL, "nsenter -t 1 -m -u -i -n -p -- systemctl");
  assert.equal(env.WASMTIME_SHIM_PRESET, "auto");
  assert.equal(at(container, "env.4.name"), "NODE_NAME");
  assert.equal(at(container, "env.4.valueFrom.fieldRef.fieldPath"), "spec.nodeName");

  // The script: install.sh beside it in the image, containerd restarted by install.sh.
  assert.deepEqual(container.command, [`${APP_DIR}/installer.sh`]);
  assert.ok(script.includes("args=(--configure-containerd --restart)"));
  const syntax = new Deno.Command("bash", { args: ["-n", `${ROOT}${SCRIPT}`] }).outputSync();
  assert.equal(syntax.code, 0, decoder.decode(syntax.stderr));
});

Deno.test("deploy/: the DaemonSet runs the image installer-image builds; rbac.yaml lets it label nodes", () => {
  const { pod, container, script } = daemonSet();
  assert.equal(container.image, `${DEFAULT_REPO}/${IMAGE_NAME}:${VERSION}`);
  // Every external command the script and install.sh run is in the image.
  const bashBuiltins = new Set([
    "printf",
    "read",
    "exec",
    "trap",
    "echo",
    "cd",
    "pwd",
    "set",
    "local",
  ]);
  for (
    const cmd of [
      "mktemp",
      "mkfifo",
      "rm",
      "dirname",
      "nsenter",
      "sha256sum",
      "tar",
      "awk",
      "readlink",
    ]
  ) {
    assert.ok(APPLETS.includes(cmd) || bashBuiltins.has(cmd), `${cmd} is not in the image`);
  }
  assert.ok(script.startsWith("#!/bin/bash\n"));
  const docs = Deno.readTextFileSync(`${ROOT}deploy/rbac.yaml`).split(/^---$/m).map((d) =>
    obj(parseYaml(d), "deploy/rbac.yaml")
  );
  const sa = docs.find((d) => d.kind === "ServiceAccount")!;
  assert.equal(at(sa, "metadata.name"), pod.serviceAccountName);
  assert.equal(at(sa, "metadata.namespace"), "kube-system");
  const role = docs.find((d) => d.kind === "ClusterRole")!;
  assert.deepEqual(at(role, "rules.0.resources"), ["nodes"]);
  assert.ok((at(role, "rules.0.verbs") as string[]).includes("patch"));
  const binding = docs.find((d) => d.kind === "ClusterRoleBinding")!;
  assert.equal(at(binding, "roleRef.name"), at(role, "metadata.name"));
  assert.equal(at(binding, "subjects.0.name"), pod.serviceAccountName);
  const readme = Deno.readTextFileSync(`${ROOT}deploy/README.md`);
  assert.ok(readme.includes("deno task installer-image"));
  assert.ok(readme.includes("kubectl apply -f deploy/rbac.yaml"));
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
  const { env } = daemonSet();
  const run = await spawnLogged("bash", [`${ROOT}${SCRIPT}`], {
    env: {
      ...env,
      INSTALL_SH: `${ROOT}scripts/install.sh`,
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
  systemctl) [ "$2" = cat ] && [ "$3" != containerd.service ] && exit 1; exit 0 ;;
  *) echo "fake nsenter: unexpected command $*" >&2; exit 1 ;;
esac
`,
    );
    await Deno.chmod(`${fakeBin}/nsenter`, 0o755);
    const config = `${tmp}/etc/containerd/config.toml`;
    const restarts = async () =>
      (await Deno.readTextFile(log)).split("\n").filter((l) => l.includes("systemctl restart"))
        .length;

    const first = await runDaemonSetScript(`${tmp}/prefix`, config, fakeBin);
    assert.equal(first.code, 0, first.output);
    assert.match(first.output, /restarting containerd to load .*config\.toml/);
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
