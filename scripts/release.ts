/**
 * `deno task release`: the release artifacts of the shim for this machine's
 * architecture, in `dist/`:
 *
 * - `containerd-shim-wasmtime-<version>-linux-<arch>.tar.gz` (and `.sha256`):
 *   everything the shim needs on a node with no Deno, Node.js, npm or network. Where
 *   `deno compile` works (it needs Deno's `denort`, downloaded or `DENORT_BIN`), the
 *   compiled executable in `bin/`; elsewhere the launcher form in `app/`: a private
 *   deno, the application's sources (no tests), its production npm packages and the
 *   bundles `deno bundle` makes. Its `install.sh` (`install.sh --from <tarball>`)
 *   installs it; Deno's module cache is filled then, on the node, because it is keyed
 *   by absolute paths and its SQLite files are not the same bytes twice.
 * - `containerd-shim-wasmtime-v1` (and `.sha256`): one executable file to drop into
 *   containerd's PATH. The compiled executable, or else a self-extracting launcher:
 *   `scripts/self_extract.sh` with the tarball appended.
 *
 * Byte-reproducible from the same commit: only files git tracks, entries sorted,
 * mtimes from SOURCE_DATE_EPOCH (default: the commit's time), owner 0:0, modes
 * without group/other write, gzip without a name or timestamp.
 *
 * Environment: DENO (the deno to ship; default the one running this), DENORT_BIN,
 * WASMTIME_SHIM_FORM=launcher (skip `deno compile`), SOURCE_DATE_EPOCH.
 *
 * @module
 */

import { compileArgs } from "./build.ts";
import { BINARY_NAME, VERSION } from "../src/shim/version.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();

/** What {@linkcode buildRelease} wrote. */
export interface Release {
  /** The tarball's path. */
  tarball: string;
  /** Its SHA-256, hex. */
  sha256: string;
  /** The one-file executable's path. */
  executable: string;
  /** `compiled` or `launcher`. */
  form: "compiled" | "launcher";
}

/** Options of {@linkcode buildRelease}. */
export interface ReleaseOptions {
  /** Where to write the artifacts; default `<checkout>/dist`. */
  outDir?: string;
  /** The deno to ship (and build with); default `$DENO`, else the running one. */
  deno?: string;
  /** `launcher` skips the `deno compile` attempt; default `$WASMTIME_SHIM_FORM`. */
  form?: "auto" | "launcher";
  /** Progress messages; default stderr. */
  log?: (msg: string) => void;
}

/** Runs a command; throws with its output, saying what failed, unless it succeeds. */
async function run(
  what: string,
  cmd: string,
  args: string[],
  opts: { cwd?: string; env?: Record<string, string>; stdin?: Uint8Array } = {},
): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    env: opts.env,
    stdin: opts.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin) {
    const w = child.stdin.getWriter();
    await w.write(opts.stdin);
    await w.close();
  }
  const out = await child.output();
  if (!out.success) {
    throw new Error(
      `release: ${what} failed (${cmd} ${args.join(" ")}, exit ${out.code}):\n` +
        decoder.decode(out.stderr) + decoder.decode(out.stdout),
    );
  }
  return decoder.decode(out.stdout);
}

/** Release name of a Deno architecture (as Go and OCI name them). */
export function releaseArch(arch: string): string {
  return ({ x86_64: "amd64", aarch64: "arm64" } as Record<string, string>)[arch] ?? arch;
}

/** The source files of the application: tracked by git, no tests, no test data. */
async function appFiles(): Promise<string[]> {
  const out = await run("listing the sources", "git", [
    "-C",
    ROOT,
    "ls-files",
    "-z",
    "--",
    "main.ts",
    "deno.json",
    "deno.lock",
    "package.json",
    "package-lock.json",
    "src",
  ]);
  return out.split("\0").filter((f) =>
    f !== "" && !f.endsWith("_test.ts") && !f.split("/").includes("testdata")
  ).sort();
}

async function copyInto(from: string, to: string): Promise<void> {
  await Deno.mkdir(to.slice(0, to.lastIndexOf("/")), { recursive: true });
  await Deno.copyFile(from, to);
}

/** `<hex>  <name>\n`, as sha256sum prints it (and install.sh reads it). */
async function sha256File(path: string): Promise<string> {
  const out = await run("hashing", "sha256sum", [path]);
  return out.split(" ")[0];
}

/**
 * The self-extracting launcher: `scripts/self_extract.sh` filled in, then the
 * tarball. The header names the payload's offset, which depends on the header's own
 * length: filled until it holds.
 */
export async function selfExtracting(o: {
  tarball: string;
  sha256: string;
  top: string;
  arch: string;
  revision: string;
  launcher: string;
}): Promise<Uint8Array> {
  const template = await Deno.readTextFile(`${ROOT}scripts/self_extract.sh`);
  const name = `containerd-shim-wasmtime-${VERSION}-${o.sha256.slice(0, 12)}`;
  let offset = 0;
  let header = "";
  for (let i = 0; i < 5; i++) {
    header = template
      .replaceAll("@VERSION@", VERSION)
      .replaceAll("@REVISION@", o.revision)
      .replaceAll("@ARCH@", o.arch)
      .replaceAll("@NAME@", name)
      .replaceAll("@TOP@", o.top)
      .replaceAll("@SHA256@", o.sha256)
      .replaceAll("@OFFSET@", String(offset + 1))
      .replace("@LAUNCHER@\n", o.launcher);
    const len = new TextEncoder().encode(header).length;
    if (len === offset) break;
    offset = len;
  }
  const head = new TextEncoder().encode(header);
  if (head.length !== offset) {
    throw new Error("release: the self-extracting header's offset does not settle");
  }
  const payload = await Deno.readFile(o.tarball);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head);
  out.set(payload, head.length);
  return out;
}

/** Builds the release artifacts (see the module doc). */
export async function buildRelease(opts: ReleaseOptions = {}): Promise<Release> {
  const log = opts.log ?? ((m: string) => console.error(`release: ${m}`));
  const outDir = opts.outDir ?? `${ROOT}dist`;
  const deno = await Deno.realPath(opts.deno ?? Deno.env.get("DENO") ?? Deno.execPath());
  const formWanted = opts.form ??
    (Deno.env.get("WASMTIME_SHIM_FORM") === "launcher" ? "launcher" : "auto");
  const git = (...a: string[]) =>
    run("asking git", "git", ["-C", ROOT, ...a]).then((s) => s.trim());
  const epoch = Deno.env.get("SOURCE_DATE_EPOCH") ?? await git("log", "-1", "--format=%ct");
  if (!/^\d+$/.test(epoch)) {
    throw new Error(`release: SOURCE_DATE_EPOCH=${epoch} is not a number of seconds`);
  }
  const dirty = (await git("status", "--porcelain", "--untracked-files=no")) !== "";
  const revision = (await git("rev-parse", "--short=12", "HEAD")) + (dirty ? "-dirty" : "");
  if (dirty) {
    log("the checkout has uncommitted changes: the artifacts carry them (revision ends in -dirty)");
  }
  const denoArch = (await run("asking the deno to ship its architecture", deno, [
    "eval",
    "console.log(Deno.build.arch)",
  ])).trim();
  const arch = releaseArch(denoArch);
  const top = `containerd-shim-wasmtime-${VERSION}-linux-${arch}`;
  const work = await Deno.makeTempDir({ prefix: "shim-release-" });
  try {
    const dir = `${work}/${top}`;
    const app = `${dir}/app`;
    for (const f of await appFiles()) await copyInto(`${ROOT}${f}`, `${app}/${f}`);
    await copyInto(`${ROOT}scripts/launcher_form.sh`, `${app}/launcher_form.sh`);
    await copyInto(`${ROOT}scripts/install.sh`, `${dir}/install.sh`);
    await Deno.chmod(`${dir}/install.sh`, 0o755);
    await Deno.writeTextFile(`${app}/build_info.json`, JSON.stringify({ revision }) + "\n");
    log("installing the production npm packages as locked");
    const env: Record<string, string> = { npm_config_update_notifier: "false" };
    await run("npm install", "env", [
      "-u",
      "PREFIX",
      "npm",
      "install",
      "--omit=dev",
      "--no-save",
      "--ignore-scripts",
      "--no-audit",
      "--no-fund",
      "--loglevel=error",
    ], { cwd: app, env });

    let form: Release["form"] = "launcher";
    if (formWanted !== "launcher") {
      try {
        await run("deno compile", deno, [
          "compile",
          "--quiet",
          ...compileArgs(`${work}/${BINARY_NAME}`).slice(1),
        ], {
          cwd: app,
          env: { NO_COLOR: "1" },
        });
        form = "compiled";
      } catch (e) {
        const first = String(e).split("\n").find((l) => /error|fail/i.test(l)) ?? "see above";
        log(
          `deno compile is not possible here (${first.trim()}): the launcher form. DENORT_BIN=/path/to/denort gives the compiled form.`,
        );
      }
    }
    if (form === "compiled") {
      await Deno.remove(app, { recursive: true });
      await copyInto(`${work}/${BINARY_NAME}`, `${dir}/bin/${BINARY_NAME}`);
    } else {
      await Deno.copyFile(deno, `${app}/deno`);
      await Deno.chmod(`${app}/deno`, 0o755);
      log("bundling start/delete and the guest runner (where deno bundle works)");
      await run("bundling", "sh", [`${app}/launcher_form.sh`, "bundle", app], {
        env: { PATH: `${deno.slice(0, deno.lastIndexOf("/"))}:${Deno.env.get("PATH") ?? ""}` },
      });
    }
    await Deno.writeTextFile(
      `${dir}/RELEASE`,
      [
        "name=containerd-shim-wasmtime",
        `version=${VERSION}`,
        `revision=${revision}`,
        "os=linux",
        `arch=${arch}`,
        `form=${form}`,
        "",
      ].join("\n"),
    );

    await Deno.mkdir(outDir, { recursive: true });
    const tarball = `${outDir}/${top}.tar.gz`;
    log(`writing ${tarball}`);
    const tar = await new Deno.Command("bash", {
      args: [
        "-c",
        'set -euo pipefail; tar --sort=name --mtime="@$1" --owner=0 --group=0 --numeric-owner ' +
        '--mode=go-w --format=gnu -C "$2" -cf - "$3" | gzip -n -6 > "$4.tmp" && mv "$4.tmp" "$4"',
        "bash",
        epoch,
        work,
        top,
        tarball,
      ],
      env: { LC_ALL: "C", GZIP: "" },
      stderr: "piped",
    }).output();
    if (!tar.success) {
      throw new Error(`release: writing ${tarball} failed: ${decoder.decode(tar.stderr)}`);
    }
    const sha256 = await sha256File(tarball);
    await Deno.writeTextFile(`${tarball}.sha256`, `${sha256}  ${top}.tar.gz\n`);

    const executable = `${outDir}/${BINARY_NAME}`;
    if (form === "compiled") {
      await Deno.copyFile(`${dir}/bin/${BINARY_NAME}`, `${executable}.tmp`);
    } else {
      const launcher = await run("writing the launcher", "sh", [
        `${app}/launcher_form.sh`,
        "launcher",
        app,
        "",
        "lifecycle",
      ]);
      await Deno.writeFile(
        `${executable}.tmp`,
        await selfExtracting({ tarball, sha256, top, arch, revision, launcher }),
      );
    }
    await Deno.chmod(`${executable}.tmp`, 0o755);
    await Deno.rename(`${executable}.tmp`, executable);
    await Deno.writeTextFile(
      `${executable}.sha256`,
      `${await sha256File(executable)}  ${BINARY_NAME}\n`,
    );
    log(`${form} form: ${tarball} (sha256 ${sha256}) and ${executable}`);
    return { tarball, sha256, executable, form };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

if (import.meta.main) {
  try {
    await buildRelease();
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    Deno.exit(1);
  }
}
