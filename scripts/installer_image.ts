/**
 * `deno task installer-image`: the installer image of deploy/daemonset.yaml, built
 * with the project's own OCI image builder (src/oci/image.ts), no Docker:
 * `dist/containerd-shim-wasmtime-installer-<version>-linux-<arch>.tar`, an OCI image
 * layout tar for `ctr image import` (or `kind load image-archive`, `skopeo copy
 * oci-archive:…`).
 *
 * Layers, each a gzip tar (one per piece, so that an update of the release leaves
 * the others shared):
 *
 * 1. busybox: Debian's `busybox-static` as `/bin/busybox`, with symlinks for the
 *    applets install.sh, launcher_form.sh and the installer script use;
 * 2. bash: Debian's `bash-static` as `/bin/bash` (install.sh is a bash script:
 *    arrays, `mapfile`, `[[ ]]`, which busybox's ash lacks);
 * 3. glibc: the dynamic loader and the few libraries of Debian's `libc6` and
 *    `libgcc-s1` that the release's private deno links against. install.sh runs that
 *    deno inside the image (`deno --version`, and `deno cache`, which must run where
 *    the application lives), and the installer script labels the node with it;
 * 4. the release: the tarball of `deno task release` unpacked at
 *    /opt/containerd-shim-wasmtime (its install.sh installs that release);
 * 5. deploy/installer.sh, the DaemonSet's script, and deploy/node_status.ts (the node
 *    label it sets), at /opt/containerd-shim-wasmtime.
 *
 * The Debian packages come from `apt-get download` (or `--debs DIR` holding the four
 * .deb files); their versions are in the image's labels. Reproducible: the same
 * commit, the same packages and the same Deno give the same bytes (tar entries
 * sorted, no timestamps, owner 0:0; the release is reproducible itself).
 *
 * ```sh
 * deno task installer-image [--release TARBALL] [--debs DIR] [--repo R] [--tag T] [--out PATH]
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { buildImage, filesFromDirectory, type LayerFile } from "../src/oci/image.ts";
import { VERSION } from "../src/shim/version.ts";
import { buildRelease, releaseArch } from "./release.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();

/** The image's name (`<repo>/<name>:<tag>`). */
export const IMAGE_NAME = "containerd-shim-wasmtime-installer";
/**
 * The default repository: `localhost/…` is a fully qualified name that no registry
 * serves, so an image imported into a node's containerd (`kind load image-archive`,
 * `ctr -n k8s.io image import`) is found under the very name the DaemonSet gives,
 * and nothing is pulled. Give `--repo REGISTRY/PATH` to push it somewhere.
 */
export const DEFAULT_REPO = "localhost";
/** Where the release and the installer script live in the image. */
export const APP_DIR = "/opt/containerd-shim-wasmtime";
/** The Debian packages the image is made of. */
export const DEBS = ["busybox-static", "bash-static", "libc6", "libgcc-s1"] as const;

/**
 * The busybox applets to link: what scripts/install.sh, scripts/launcher_form.sh and
 * deploy/installer.sh call (everything else they use is a bash builtin).
 */
export const APPLETS = [
  "[",
  "awk",
  "basename",
  "cat",
  "chmod",
  "chown",
  "cmp",
  "cp",
  "cut",
  "date",
  "dirname",
  "env",
  "find",
  "grep",
  "gzip",
  "head",
  "id",
  "ln",
  "ls",
  "mkdir",
  "mkfifo",
  "mktemp",
  "mv",
  "nsenter",
  "printf",
  "readlink",
  "rm",
  "rmdir",
  "sed",
  "sh",
  "sha256sum",
  "sleep",
  "sort",
  "tail",
  "tar",
  "test",
  "touch",
  "tr",
  "uname",
  "wc",
];

/** Options of {@linkcode buildInstallerImage}. */
export interface InstallerImageOptions {
  /** A release tarball of `deno task release`; default: build one (launcher form). */
  release?: string;
  /** A directory with the .deb files of {@linkcode DEBS}; default: `apt-get download`. */
  debs?: string;
  repo?: string;
  tag?: string;
  /** Output file; default `dist/<name>-<version>-linux-<arch>.tar`. */
  out?: string;
  log?: (msg: string) => void;
}

/** What {@linkcode buildInstallerImage} wrote. */
export interface InstallerImage {
  path: string;
  reference: string;
  /** The manifest's digest. */
  digest: string;
  size: number;
}

async function run(what: string, cmd: string, args: string[], cwd?: string): Promise<string> {
  const out = await new Deno.Command(cmd, { args, cwd, stdout: "piped", stderr: "piped" })
    .output();
  if (!out.success) {
    throw new Error(
      `installer-image: ${what} failed (${cmd} ${args.join(" ")}, exit ${out.code}):\n` +
        decoder.decode(out.stderr) + decoder.decode(out.stdout),
    );
  }
  return decoder.decode(out.stdout);
}

/** The .deb of `pkg` in `dir` (as apt names it: `<pkg>_<version>_<arch>.deb`). */
async function debIn(dir: string, pkg: string, arch: string): Promise<string> {
  const found: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(`${pkg}_`) && e.name.endsWith(`_${arch}.deb`)) found.push(e.name);
  }
  if (found.length !== 1) {
    throw new Error(
      `installer-image: ${dir} has ${found.length} ${pkg}_*_${arch}.deb files, where one is ` +
        `needed: put exactly one there (apt-get download ${pkg}:${arch})`,
    );
  }
  return `${dir}/${found[0]}`;
}

/** The multiarch directory and dynamic loader of Debian's glibc for an architecture. */
function glibcNames(arch: string): { triplet: string; loader: string; loaderDir: string } {
  switch (arch) {
    case "amd64":
      return { triplet: "x86_64-linux-gnu", loader: "ld-linux-x86-64.so.2", loaderDir: "/lib64" };
    case "arm64":
      return { triplet: "aarch64-linux-gnu", loader: "ld-linux-aarch64.so.1", loaderDir: "/lib" };
    default:
      throw new Error(`installer-image: no glibc layout known for linux-${arch}`);
  }
}

/** Builds the installer image (see the module doc). */
export async function buildInstallerImage(
  opts: InstallerImageOptions = {},
): Promise<InstallerImage> {
  const log = opts.log ?? ((m: string) => console.error(`installer-image: ${m}`));
  const work = await Deno.makeTempDir({ prefix: "shim-installer-image-" });
  try {
    let tarball = opts.release;
    if (!tarball) {
      log("building the release (launcher form) first");
      tarball = (await buildRelease({ outDir: `${work}/dist`, form: "launcher", log })).tarball;
    }
    await run("unpacking the release", "tar", ["-xzf", tarball, "-C", work, "--no-same-owner"]);
    const tops = (await Array.fromAsync(Deno.readDir(work)))
      .filter((e) => e.isDirectory && e.name.startsWith("containerd-shim-wasmtime-"));
    if (tops.length !== 1) {
      throw new Error(`installer-image: ${tarball} is not a release tarball (one top directory)`);
    }
    const top = `${work}/${tops[0].name}`;
    const release = Object.fromEntries(
      (await Deno.readTextFile(`${top}/RELEASE`)).split("\n").filter((l) => l.includes("="))
        .map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]),
    );
    const arch: string = release.arch;
    if (arch !== releaseArch(Deno.build.arch)) {
      log(`note: the release is for linux-${arch}, this machine is ${Deno.build.arch}`);
    }

    let debs = opts.debs;
    if (!debs) {
      debs = `${work}/debs`;
      await Deno.mkdir(debs);
      log(`apt-get download ${DEBS.join(" ")} (${arch})`);
      await run("downloading Debian packages", "apt-get", [
        "download",
        ...DEBS.map((p) => `${p}:${arch}`),
      ], debs);
    }
    const versions: Record<string, string> = {};
    const trees: Record<string, string> = {};
    for (const pkg of DEBS) {
      const deb = await debIn(debs, pkg, arch);
      versions[pkg] = (await run("reading a .deb", "dpkg-deb", ["-f", deb, "Version"])).trim();
      trees[pkg] = `${work}/deb-${pkg}`;
      await run("unpacking a .deb", "dpkg-deb", ["-x", deb, trees[pkg]]);
    }

    // 1. busybox and its applets.
    const busybox: LayerFile[] = [
      { path: "/bin/busybox", hostPath: `${trees["busybox-static"]}/bin/busybox`, mode: 0o755 },
      ...APPLETS.map((a): LayerFile => ({
        path: `/bin/${a}`,
        type: "symlink",
        linkname: "busybox",
      })),
      // install.sh and the launchers start with `#!/usr/bin/env bash`.
      { path: "/usr/bin/env", type: "symlink", linkname: "../../bin/busybox" },
      // Scratch space (mktemp, the script's FIFO) and the node's mount points.
      { path: "/tmp", type: "directory", mode: 0o1777 },
      { path: "/usr/local", type: "directory", mode: 0o755 },
      { path: "/etc/containerd", type: "directory", mode: 0o755 },
    ];
    // 2. bash.
    const bash: LayerFile[] = [
      { path: "/bin/bash", hostPath: `${trees["bash-static"]}/bin/bash-static`, mode: 0o755 },
    ];
    // 3. glibc for the release's deno: the loader and the libraries deno links against.
    const { triplet, loader, loaderDir } = glibcNames(arch);
    const libDir = `/lib/${triplet}`;
    const wanted = /^(libc|libm|libdl|libpthread|librt|libgcc_s)\.so\.\d+$/;
    const glibc: LayerFile[] = [];
    for (const pkg of ["libc6", "libgcc-s1"]) {
      for await (const e of Deno.readDir(`${trees[pkg]}${libDir}`)) {
        if (wanted.test(e.name) || e.name === loader) {
          glibc.push({
            path: `${libDir}/${e.name}`,
            hostPath: await Deno.realPath(`${trees[pkg]}${libDir}/${e.name}`),
            mode: 0o755,
          });
        }
      }
    }
    if (loaderDir !== "/lib") {
      glibc.push({
        path: `${loaderDir}/${loader}`,
        type: "symlink",
        linkname: `${libDir}/${loader}`,
      });
    }
    glibc.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
    // 4. the release, 5. the DaemonSet's script.
    const app = await filesFromDirectory(top, APP_DIR);
    const script: LayerFile[] = [
      { path: `${APP_DIR}/installer.sh`, hostPath: `${ROOT}deploy/installer.sh`, mode: 0o755 },
      { path: `${APP_DIR}/node_status.ts`, hostPath: `${ROOT}deploy/node_status.ts`, mode: 0o644 },
    ];

    const out = opts.out ??
      `${ROOT}dist/${IMAGE_NAME}-${release.version}-linux-${arch}.tar`;
    await Deno.mkdir(out.slice(0, out.lastIndexOf("/")) || ".", { recursive: true });
    const labels: Record<string, string> = {
      "org.opencontainers.image.title": IMAGE_NAME,
      "org.opencontainers.image.version": release.version,
      "org.opencontainers.image.revision": release.revision,
    };
    for (const [pkg, v] of Object.entries(versions)) {
      labels[`io.containerd.wasmtime.deb.${pkg}`] = v;
    }
    const built = await buildImage({
      name: IMAGE_NAME,
      repo: opts.repo ?? DEFAULT_REPO,
      tag: opts.tag ?? release.version ?? VERSION,
      outPath: out,
      config: {
        os: "linux",
        architecture: arch,
        entrypoint: [`${APP_DIR}/installer.sh`],
        env: ["PATH=/bin"],
        labels,
      },
      layers: [
        { files: busybox, gzip: true },
        { files: bash, gzip: true },
        { files: glibc, gzip: true },
        { files: app, gzip: true },
        { files: script, gzip: true },
      ],
    });
    log(
      `wrote ${out}: ${built.reference} (manifest ${built.manifest.digest}, ${built.size} bytes)`,
    );
    return {
      path: out,
      reference: built.reference,
      digest: built.manifest.digest,
      size: built.size,
    };
  } finally {
    await Deno.remove(work, { recursive: true });
  }
}

if (import.meta.main) {
  try {
    const { values } = parseArgs({
      args: Deno.args,
      strict: true,
      options: {
        release: { type: "string" },
        debs: { type: "string" },
        repo: { type: "string" },
        tag: { type: "string" },
        out: { type: "string" },
      },
    });
    await buildInstallerImage(values);
  } catch (e) {
    console.error(e instanceof Error ? e.message : String(e));
    Deno.exit(1);
  }
}
