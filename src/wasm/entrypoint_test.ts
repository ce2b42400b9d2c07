import assert from "node:assert/strict";
import { type ErrorKind, Kind, ShimError } from "../errdefs/errors.ts";
import {
  DEFAULT_FUNC,
  type Entrypoint,
  type EntrypointRequest,
  lookupEnv,
  resolveEntrypoint,
  splitArg0,
} from "./entrypoint.ts";

/**
 * A scratch tree: `<dir>/rootfs` is the container root, `<dir>/host` stands for the
 * host outside it (an escape would find `host/secret.wasm`).
 */
function makeTree(): { dir: string; rootfs: string; cleanup: () => void } {
  const dir = Deno.makeTempDirSync({ prefix: "entrypoint_test_" });
  const rootfs = `${dir}/rootfs`;
  for (const d of ["bin", "usr/bin", "app/sub", "etc", "dir.wasm", "usr/local/bin/tool.wasm"]) {
    Deno.mkdirSync(`${rootfs}/${d}`, { recursive: true });
  }
  Deno.mkdirSync(`${dir}/host`);
  const files = ["bin/app.wasm", "usr/bin/app.wasm", "usr/bin/tool.wasm", "app/main.wasm"];
  for (const f of [...files, "app/sub/x.wasm", "etc/real.wasm"]) {
    Deno.writeTextFileSync(`${rootfs}/${f}`, f);
  }
  Deno.writeTextFileSync(`${dir}/host/secret.wasm`, "secret");
  Deno.writeTextFileSync(`${dir}/secret.wasm`, "secret");
  // Symlinks, read as a container would.
  Deno.symlinkSync("/etc/real.wasm", `${rootfs}/bin/abs.wasm`); // absolute: inside rootfs
  Deno.symlinkSync("../etc/real.wasm", `${rootfs}/bin/rel.wasm`);
  Deno.symlinkSync("../../../secret.wasm", `${rootfs}/bin/climb.wasm`); // climbs out
  Deno.symlinkSync(`${dir}/host/secret.wasm`, `${rootfs}/bin/host.wasm`); // a host path
  Deno.symlinkSync("/app", `${rootfs}/applink`);
  Deno.symlinkSync("loop2.wasm", `${rootfs}/bin/loop1.wasm`);
  Deno.symlinkSync("loop1.wasm", `${rootfs}/bin/loop2.wasm`);
  Deno.symlinkSync("/nowhere.wasm", `${rootfs}/bin/dangling.wasm`);
  const mkfifo = new Deno.Command("mkfifo", { args: [`${rootfs}/bin/fifo.wasm`] }).outputSync();
  assert.ok(mkfifo.success, "mkfifo");
  return { dir, rootfs, cleanup: () => Deno.removeSync(dir, { recursive: true }) };
}

function resolve(
  rootfs: string,
  args: string[],
  more: Partial<EntrypointRequest> = {},
): Entrypoint {
  return resolveEntrypoint({ rootfs, args, env: [], cwd: "/", ...more });
}

function rejects(fn: () => unknown, code: ErrorKind, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ShimError, `expected ShimError, got ${err}`);
    assert.equal(err.kind, code, err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

Deno.test("splitArg0 splits at the first #, defaulting to _start", () => {
  assert.deepEqual(splitArg0("app.wasm"), { path: "app.wasm", func: DEFAULT_FUNC });
  assert.deepEqual(splitArg0("app.wasm#run"), { path: "app.wasm", func: "run" });
  assert.deepEqual(splitArg0("/a/app.wasm#f#g"), { path: "/a/app.wasm", func: "f#g" });
  assert.deepEqual(splitArg0("app.wasm#"), { path: "app.wasm", func: DEFAULT_FUNC });
});

Deno.test("lookupEnv takes the first KEY= entry", () => {
  assert.equal(lookupEnv(["A=1", "PATH=/x", "PATH=/y"], "PATH"), "/x");
  assert.equal(lookupEnv(["PATHX=1"], "PATH"), undefined);
  assert.equal(lookupEnv(["PATH="], "PATH"), "");
});

Deno.test("empty args are refused", () => {
  const { rootfs, cleanup } = makeTree();
  try {
    rejects(() => resolve(rootfs, []), Kind.INVALID_ARGUMENT, /^process\.args is empty: /);
    rejects(() => resolve(rootfs, [""]), Kind.INVALID_ARGUMENT, /^process\.args is empty: /);
    rejects(() => resolve(rootfs, ["#run"]), Kind.INVALID_ARGUMENT, /names a function but no wasm/);
  } finally {
    cleanup();
  }
});

Deno.test("a bare name is looked up on the spec's PATH, in order", () => {
  const { rootfs, cleanup } = makeTree();
  try {
    const env = ["PATH=/usr/bin:/bin"];
    assert.deepEqual(resolve(rootfs, ["app.wasm"], { env }), {
      hostPath: `${rootfs}/usr/bin/app.wasm`,
      guestPath: "/usr/bin/app.wasm",
      func: "_start",
    });
    const other = resolve(rootfs, ["app.wasm#run"], { env: ["PATH=/bin:/usr/bin"] });
    assert.equal(other.guestPath, "/bin/app.wasm");
    assert.equal(other.func, "run");
  } finally {
    cleanup();
  }
});

Deno.test("without PATH in the spec, the default search path is used", () => {
  const { rootfs, cleanup } = makeTree();
  try {
    // /usr/local/bin/tool.wasm is a directory: skipped; /usr/bin comes next.
    assert.equal(resolve(rootfs, ["tool.wasm"]).guestPath, "/usr/bin/tool.wasm");
    assert.equal(resolve(rootfs, ["app.wasm"]).guestPath, "/usr/bin/app.wasm");
  } finally {
    cleanup();
  }
});

Deno.test("a bare name falls back to the cwd after PATH", () => {
  const { rootfs, cleanup } = makeTree();
  try {
    const found = resolve(rootfs, ["main.wasm"], { env: ["PATH=/bin"], cwd: "/app" });
    assert.equal(found.guestPath, "/app/main.wasm");
    assert.equal(found.hostPath, `${rootfs}/app/main.wasm`);
    // An empty PATH entry also means the cwd.
    assert.equal(
      resolve(rootfs, ["main.wasm"], { env: ["PATH=/bin::"], cwd: "/app" }).guestPath,
      "/app/main.wasm",
    );
  } finally {
    cleanup();
  }
});

Deno.test("a path with a slash is resolved against the cwd, not PATH", () => {
  const { rootfs, cleanup } = makeTree();
  try {
    assert.equal(resolve(rootfs, ["./main.wasm"], { cwd: "/app" }).guestPath, "/app/main.wasm");
    assert.equal(resolve(rootfs, ["sub/x.wasm"], { cwd: "/app" }).guestPath, "/app/sub/x.wasm");
    assert.equal(resolve(rootfs, ["../bin/app.wasm"], { cwd: "/app" }).guestPath, "/bin/app.wasm");
    assert.equal(resolve(rootfs, ["/bin/app.wasm"], { cwd: "/app" }).guestPath, "/bin/app.wasm");
    // An empty cwd is "/"; a relative one is taken from "/".
    assert.equal(resolve(rootfs, ["./etc/real.wasm"], { cwd: "" }).guestPath, "/etc/real.wasm");
    assert.equal(resolve(rootfs, ["sub/x.wasm"], { cwd: "app" }).guestPath, "/app/sub/x.wasm");
  } finally {
    cleanup();
  }
});

Deno.test("symlinks are followed inside the rootfs, absolute targets from its root", () => {
  const { rootfs, cleanup } = makeTree();
  try {
    assert.deepEqual(resolve(rootfs, ["/bin/abs.wasm"]), {
      hostPath: `${rootfs}/etc/real.wasm`,
      guestPath: "/etc/real.wasm",
      func: "_start",
    });
    assert.equal(resolve(rootfs, ["/bin/rel.wasm"]).guestPath, "/etc/real.wasm");
    assert.equal(resolve(rootfs, ["/applink/sub/x.wasm"]).guestPath, "/app/sub/x.wasm");
    assert.equal(resolve(rootfs, ["/applink/../etc/real.wasm"]).guestPath, "/etc/real.wasm");
  } finally {
    cleanup();
  }
});

Deno.test("a symlink to a host path means that path inside the rootfs", () => {
  const { dir, rootfs, cleanup } = makeTree();
  try {
    rejects(
      () => resolve(rootfs, ["/bin/host.wasm"]),
      Kind.NOT_FOUND,
      new RegExp(`entrypoint "/bin/host\\.wasm" in the container's root ${rootfs} \\(searched`),
    );
    // Once the file exists under the rootfs at that path, that is what is found.
    Deno.mkdirSync(`${rootfs}${dir}/host`, { recursive: true });
    Deno.writeTextFileSync(`${rootfs}${dir}/host/secret.wasm`, "inside");
    assert.equal(resolve(rootfs, ["/bin/host.wasm"]).hostPath, `${rootfs}${dir}/host/secret.wasm`);
  } finally {
    cleanup();
  }
});

Deno.test("paths that leave the rootfs are refused, lexically or through symlinks", () => {
  const { rootfs, cleanup } = makeTree();
  try {
    rejects(
      () => resolve(rootfs, ["../secret.wasm"]),
      Kind.INVALID_ARGUMENT,
      /entrypoint "\.\.\/secret\.wasm": \/\.\.\/secret\.wasm leads outside the container's root/,
    );
    rejects(
      () => resolve(rootfs, ["/app/../../secret.wasm"]),
      Kind.INVALID_ARGUMENT,
      /leads outside/,
    );
    rejects(() => resolve(rootfs, ["/bin/climb.wasm"]), Kind.INVALID_ARGUMENT, /leads outside/);
    rejects(
      () => resolve(rootfs, ["climb.wasm"], { env: ["PATH=/bin"] }),
      Kind.INVALID_ARGUMENT,
      /leads outside/,
    );
  } finally {
    cleanup();
  }
});

Deno.test("missing files name every place searched", () => {
  const { rootfs, cleanup } = makeTree();
  try {
    rejects(
      () => resolve(rootfs, ["nope.wasm"], { env: ["PATH=/bin:/usr/bin"], cwd: "/app" }),
      Kind.NOT_FOUND,
      /^entrypoint "nope\.wasm" in the container's root .* \(searched PATH and cwd: \/bin\/nope\.wasm, \/usr\/bin\/nope\.wasm, \/app\/nope\.wasm\): not found$/,
    );
    rejects(
      () => resolve(rootfs, ["./nope.wasm"], { cwd: "/app" }),
      Kind.NOT_FOUND,
      /\(searched \/app\/nope\.wasm \(cwd \/app\)\): not found$/,
    );
    rejects(() => resolve(rootfs, ["/bin/dangling.wasm"]), Kind.NOT_FOUND, /dangling/);
    // A file used as a directory is just missing.
    rejects(() => resolve(rootfs, ["/bin/app.wasm/x.wasm"]), Kind.NOT_FOUND, /searched/);
  } finally {
    cleanup();
  }
});

Deno.test("symlink loops, directories and special files are refused", () => {
  const { rootfs, cleanup } = makeTree();
  try {
    rejects(
      () => resolve(rootfs, ["/bin/loop1.wasm"]),
      Kind.INVALID_ARGUMENT,
      /too many levels of symbolic links/,
    );
    rejects(
      () => resolve(rootfs, ["/dir.wasm"]),
      Kind.INVALID_ARGUMENT,
      /^entrypoint "\/dir\.wasm": \/dir\.wasm is a directory/,
    );
    rejects(
      () => resolve(rootfs, ["fifo.wasm"], { env: ["PATH=/bin"] }),
      Kind.INVALID_ARGUMENT,
      /\/bin\/fifo\.wasm is not a regular file/,
    );
  } finally {
    cleanup();
  }
});
