/**
 * The few libc calls Deno has no API for (mount, umount2, prctl), through Deno's FFI.
 * Opened lazily: only the server process and the `delete` action need them.
 *
 * @module
 */

const SYMBOLS = {
  mount: { parameters: ["buffer", "buffer", "buffer", "usize", "buffer"], result: "i32" },
  umount2: { parameters: ["buffer", "i32"], result: "i32" },
  prctl: { parameters: ["i32", "usize", "usize", "usize", "usize"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
  strerror: { parameters: ["i32"], result: "pointer" },
} as const;

let lib: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

function libc(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  lib ??= Deno.dlopen("libc.so.6", SYMBOLS);
  return lib.symbols;
}

/** A failed system call, with its errno. */
export class SyscallError extends Error {
  /** The errno value. */
  readonly errno: number;
  /** Creates an error for `call` that failed with `errno`. */
  constructor(call: string, errno: number, detail: string) {
    const text = Deno.UnsafePointerView.getCString(libc().strerror(errno)!);
    super(`${call} ${detail}: ${text} (errno ${errno})`);
    this.name = "SyscallError";
    this.errno = errno;
  }
}

/** errno values we act on. */
export const Errno = { EPERM: 1, ENOENT: 2, EBUSY: 16, EINVAL: 22 } as const;

function cstr(s: string | null): Uint8Array<ArrayBuffer> | null {
  if (s === null) return null;
  return new TextEncoder().encode(s + "\0") as Uint8Array<ArrayBuffer>;
}

function errno(): number {
  const p = libc().__errno_location();
  return new Deno.UnsafePointerView(p!).getInt32();
}

/** mount(2). */
export function mount(
  source: string | null,
  target: string,
  fstype: string | null,
  flags: number,
  data: string | null,
): void {
  if (libc().mount(cstr(source), cstr(target), cstr(fstype), BigInt(flags), cstr(data)) !== 0) {
    throw new SyscallError("mount", errno(), `${source ?? "none"} on ${target} (${fstype ?? "-"})`);
  }
}

/** umount2(2) flag: lazy unmount. */
export const MNT_DETACH = 2;

/** umount2(2). */
export function umount2(target: string, flags: number): void {
  if (libc().umount2(cstr(target), flags) !== 0) {
    throw new SyscallError("umount", errno(), target);
  }
}

/** prctl option: become the subreaper of orphaned descendants. */
export const PR_SET_CHILD_SUBREAPER = 36;
/** prctl option: signal sent to this process when its parent dies. */
export const PR_SET_PDEATHSIG = 1;

/** prctl(2) with one argument. */
export function prctl(option: number, arg: number): void {
  if (libc().prctl(option, BigInt(arg), 0n, 0n, 0n) !== 0) {
    throw new SyscallError("prctl", errno(), String(option));
  }
}
