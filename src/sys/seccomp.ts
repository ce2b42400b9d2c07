/**
 * A seccomp filter for guest runners, installed on every thread of the process at once
 * (`SECCOMP_FILTER_FLAG_TSYNC`) once the container setup is done.
 *
 * Why: capabilities are per thread. A runner starts with CAP_SYS_ADMIN and
 * CAP_SYS_PTRACE for its setup (mounts, `pidfd_getfd`); a guest of uid 0 keeps only
 * runc's default set on the thread that set it, but Deno's other threads (V8's
 * platform workers, the async runtime's pool) keep what they started with, and no
 * capability call reaches them. A filter does: with it no thread can mount, enter or
 * make namespaces, trace or read other processes, load kernel code, or reach the
 * kernel interfaces container runtimes keep from containers (Docker's default profile
 * refuses the same calls to a container without extra capabilities). Everything else
 * is allowed: the list names what a runner never needs after its setup.
 *
 * A denied call fails with EPERM (`clone3` with ENOSYS, so that glibc falls back to
 * `clone`, whose namespace flags the filter can see); a call of another ABI (32-bit
 * or x32 on x86-64) fails with EPERM.
 *
 * @module
 */

import { Errno, seccompFilterAllThreads } from "./libc.ts";

/** The architectures a filter can be built for, as `Deno.build.arch` names them. */
export type FilterArch = "x86_64" | "aarch64";

/** `AUDIT_ARCH_*` of each architecture: what `seccomp_data.arch` holds. */
export const AUDIT_ARCH: Record<FilterArch, number> = {
  x86_64: 0xc000003e,
  aarch64: 0xc00000b7,
};

/**
 * The calls refused after the setup, with their numbers on x86-64 and arm64 (from
 * the kernel's `unistd_64.h` and `asm-generic/unistd.h`; null: no such call there).
 */
export const DENIED_SYSCALLS: Readonly<Record<string, readonly [number | null, number | null]>> = {
  // Mounts and the root: the container's view of files is fixed by the setup.
  mount: [165, 40],
  umount2: [166, 39],
  pivot_root: [155, 41],
  chroot: [161, 51],
  open_tree: [428, 428],
  move_mount: [429, 429],
  fsopen: [430, 430],
  fsconfig: [431, 431],
  fsmount: [432, 432],
  fspick: [433, 433],
  mount_setattr: [442, 442],
  // Namespaces (clone's namespace flags: see the filter).
  unshare: [272, 97],
  setns: [308, 268],
  // Other processes' memory and descriptors.
  ptrace: [101, 117],
  process_vm_readv: [310, 270],
  process_vm_writev: [311, 271],
  pidfd_getfd: [438, 438],
  kcmp: [312, 272],
  // Kernel code, kernel state and the node's identity and clock.
  kexec_load: [246, 104],
  kexec_file_load: [320, 294],
  init_module: [175, 105],
  finit_module: [313, 273],
  delete_module: [176, 106],
  bpf: [321, 280],
  perf_event_open: [298, 241],
  userfaultfd: [323, 282],
  keyctl: [250, 219],
  add_key: [248, 217],
  request_key: [249, 218],
  acct: [163, 89],
  swapon: [167, 224],
  swapoff: [168, 225],
  reboot: [169, 142],
  settimeofday: [164, 170],
  clock_settime: [227, 112],
  clock_adjtime: [305, 266],
  adjtimex: [159, 171],
  syslog: [103, 116],
  quotactl: [179, 60],
  quotactl_fd: [443, 443],
  lookup_dcookie: [212, 18],
  name_to_handle_at: [303, 264],
  open_by_handle_at: [304, 265],
  fanotify_init: [300, 262],
  sethostname: [170, 161],
  setdomainname: [171, 162],
  vhangup: [153, 58],
  iopl: [172, null],
  ioperm: [173, null],
  uselib: [134, null],
  mknod: [133, null],
  mknodat: [259, 33],
  // A large kernel surface the runner does not use.
  io_uring_setup: [425, 425],
  io_uring_enter: [426, 426],
  io_uring_register: [427, 427],
};

/** clone(2) and clone3(2). */
const CLONE: Record<FilterArch, number> = { x86_64: 56, aarch64: 220 };
const CLONE3 = 435;

/** clone(2) flags that make namespaces (CLONE_NEWTIME, 0x80, is clone3/unshare only). */
const CLONE_NAMESPACE_FLAGS = 0x7e020000;
/** x86-64 numbers at and above this bit are the x32 ABI's. */
export const X32_SYSCALL_BIT = 0x40000000;

// Classic BPF as seccomp reads it (linux/filter.h, linux/seccomp.h).
export const BPF_LD_W_ABS = 0x20;
export const BPF_ALU_AND_K = 0x54;
export const BPF_JA = 0x05;
export const BPF_JEQ_K = 0x15;
export const BPF_JGT_K = 0x25;
export const BPF_JGE_K = 0x35;
export const BPF_JSET_K = 0x45;
export const BPF_RET_K = 0x06;
/** The kernel's limit of instructions a filter may have (`BPF_MAXINSNS`). */
export const BPF_MAXINSNS = 4096;
export const SECCOMP_RET_ALLOW = 0x7fff0000;
export const SECCOMP_RET_ERRNO = 0x00050000;
export const ENOSYS = 38;
/** Offsets in `struct seccomp_data`: nr, arch, args[i] (8 bytes each, little-endian). */
export const DATA_NR = 0;
export const DATA_ARCH = 4;
export const DATA_ARGS = 16;
const DATA_ARG0 = DATA_ARGS;

/** A jump target: a label, or 0 for the next instruction. */
export type Target = string | 0;

/**
 * One `struct sock_filter`; jumps name a label resolved by {@linkcode assemble}
 * (`ja`: `BPF_JA`, whose 32-bit offset reaches anywhere).
 */
export type Insn =
  | { code: number; k: number }
  | { code: number; k: number; jt: Target; jf: Target }
  | { ja: string }
  | { label: string };

/** Instructions without labels, with the label each jump goes to. */
type Placed = Exclude<Insn, { label: string }>;

/**
 * Encodes instructions as `struct sock_filter[]` (8 bytes each), resolving labels.
 * A conditional jump's offsets are 8 bits (255 instructions at most): a jump that
 * lands further goes through a `BPF_JA` placed right after it, which the other
 * branch skips.
 *
 * @throws {Error} for a label missing or behind its jump, or a program over
 *   {@linkcode BPF_MAXINSNS} instructions
 */
export function assemble(program: Insn[]): Uint8Array<ArrayBuffer> {
  let items = program.slice();
  let fresh = 0;
  for (;;) {
    const at = new Map<string, number>();
    const insns: Placed[] = [];
    for (const i of items) {
      if ("label" in i) at.set(i.label, insns.length);
      else insns.push(i);
    }
    const offset = (to: Target, pc: number) => {
      if (to === 0) return 0;
      const target = at.get(to);
      if (target === undefined) throw new Error(`seccomp: no label ${to}`);
      if (target <= pc) throw new Error(`seccomp: jump back to ${to}`);
      return target - pc - 1;
    };
    // Conditional jumps out of reach, as indexes of `items`.
    const far = new Set<number>();
    let pc = 0;
    items.forEach((i, n) => {
      if ("label" in i) return;
      if ("jt" in i && (offset(i.jt, pc) > 255 || offset(i.jf, pc) > 255)) far.add(n);
      pc++;
    });
    if (far.size === 0) {
      if (insns.length > BPF_MAXINSNS) {
        throw new Error(
          `seccomp: the filter needs ${insns.length} instructions, over the kernel's ${BPF_MAXINSNS}`,
        );
      }
      const out = new Uint8Array(insns.length * 8);
      const view = new DataView(out.buffer);
      insns.forEach((insn, pc) => {
        if ("ja" in insn) {
          view.setUint16(pc * 8, BPF_JA, true);
          view.setUint32(pc * 8 + 4, offset(insn.ja, pc), true);
          return;
        }
        view.setUint16(pc * 8, insn.code, true);
        if ("jt" in insn) {
          view.setUint8(pc * 8 + 2, offset(insn.jt, pc));
          view.setUint8(pc * 8 + 3, offset(insn.jf, pc));
        }
        view.setUint32(pc * 8 + 4, insn.k >>> 0, true);
      });
      return out;
    }
    // Branch to far targets through `ja`s right after the jump: [jump, ja t?, ja f?, next].
    // The `ja`s may push other jumps out of reach: hence the next round.
    items = items.flatMap((item, n): Insn[] => {
      if (!far.has(n)) return [item];
      const jump = item as { code: number; k: number; jt: Target; jf: Target };
      const id = fresh++;
      const next = `~next${id}`;
      const inserted: Insn[] = [];
      const relay = (to: Target): Target => {
        if (to === 0) return next;
        const label = `~relay${id}_${inserted.length}`;
        inserted.push({ label }, { ja: to });
        return label;
      };
      const jt = relay(jump.jt);
      const jf = relay(jump.jf);
      return [{ code: jump.code, k: jump.k, jt, jf }, ...inserted, { label: next }];
    });
  }
}

/** The guest runner's filter for `arch`, as `struct sock_filter[]`. */
export function guestRunnerFilter(arch: FilterArch): Uint8Array<ArrayBuffer> {
  const column = arch === "x86_64" ? 0 : 1;
  const denied = Object.values(DENIED_SYSCALLS)
    .map((numbers) => numbers[column])
    .filter((n): n is number => n !== null);
  const program: Insn[] = [
    { code: BPF_LD_W_ABS, k: DATA_ARCH },
    { code: BPF_JEQ_K, k: AUDIT_ARCH[arch], jt: 0, jf: "eperm" },
    { code: BPF_LD_W_ABS, k: DATA_NR },
  ];
  if (arch === "x86_64") {
    program.push({ code: BPF_JGE_K, k: X32_SYSCALL_BIT, jt: "eperm", jf: 0 });
  }
  for (const nr of denied) program.push({ code: BPF_JEQ_K, k: nr, jt: "eperm", jf: 0 });
  program.push(
    { code: BPF_JEQ_K, k: CLONE3, jt: "enosys", jf: 0 },
    { code: BPF_JEQ_K, k: CLONE[arch], jt: 0, jf: "allow" },
    { code: BPF_LD_W_ABS, k: DATA_ARG0 },
    { code: BPF_JSET_K, k: CLONE_NAMESPACE_FLAGS, jt: "eperm", jf: 0 },
    { label: "allow" },
    { code: BPF_RET_K, k: SECCOMP_RET_ALLOW },
    { label: "eperm" },
    { code: BPF_RET_K, k: SECCOMP_RET_ERRNO | Errno.EPERM },
    { label: "enosys" },
    { code: BPF_RET_K, k: SECCOMP_RET_ERRNO | ENOSYS },
  );
  return assemble(program);
}

/**
 * Installs {@linkcode guestRunnerFilter} on every thread of this process (see the
 * module documentation), with `no_new_privs`.
 */
export function installGuestRunnerFilter(): void {
  seccompFilterAllThreads(guestRunnerFilter(filterArch()));
}

/** This process's architecture, as filters are built for it. @throws {Error} for another */
export function filterArch(): FilterArch {
  const arch = Deno.build.arch;
  if (arch !== "x86_64" && arch !== "aarch64") {
    throw new Error(`seccomp: no filter for ${arch}`);
  }
  return arch;
}

/** A compiled profile: what the runner installs. */
export interface CompiledSeccomp {
  /** `struct sock_filter[]`, base64 (it travels in the runner's JSON configuration). */
  filter: string;
  /** `SECCOMP_FILTER_FLAG_*` bits beside TSYNC. */
  flags: number;
  /** Instructions in the filter. */
  instructions: number;
}

/** The filter bytes of a {@linkcode CompiledSeccomp}. */
export function filterBytes(compiled: CompiledSeccomp): Uint8Array<ArrayBuffer> {
  const s = atob(compiled.filter);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/**
 * Installs a container's compiled profile (`seccomp_profile.ts`) on every thread of
 * this process, after the runner's own filter, with `no_new_privs`.
 */
export function installSeccompProfile(compiled: CompiledSeccomp): void {
  seccompFilterAllThreads(filterBytes(compiled), compiled.flags);
}

// The OCI runtime spec's `linux.seccomp`, as `src/oci/spec.ts` reads it and
// `seccomp_profile.ts` compiles it (here, apart from the compiler and its tables of
// call numbers, which a runner never loads).

/** The actions of the runtime spec a wasm guest's runner can apply. */
export const SECCOMP_ACTIONS = [
  "SCMP_ACT_KILL",
  "SCMP_ACT_KILL_THREAD",
  "SCMP_ACT_KILL_PROCESS",
  "SCMP_ACT_TRAP",
  "SCMP_ACT_ERRNO",
  "SCMP_ACT_TRACE",
  "SCMP_ACT_ALLOW",
  "SCMP_ACT_LOG",
] as const;
export type SeccompAction = typeof SECCOMP_ACTIONS[number];

/** The comparisons of the runtime spec (`args[].op`). */
export const SECCOMP_OPS = [
  "SCMP_CMP_NE",
  "SCMP_CMP_LT",
  "SCMP_CMP_LE",
  "SCMP_CMP_EQ",
  "SCMP_CMP_GE",
  "SCMP_CMP_GT",
  "SCMP_CMP_MASKED_EQ",
] as const;
export type SeccompOp = typeof SECCOMP_OPS[number];

/** `seccomp(2)` flags a profile may ask for (`flags`), by the spec's names. */
export const SECCOMP_FLAGS: Readonly<Record<string, number>> = {
  // Always set: the filter goes on every thread of the runner.
  SECCOMP_FILTER_FLAG_TSYNC: 0,
  SECCOMP_FILTER_FLAG_LOG: 2,
  SECCOMP_FILTER_FLAG_SPEC_ALLOW: 4,
};

/** Every architecture name of the runtime spec (and libseccomp's LoongArch). */
export const SECCOMP_ARCHES = new Set([
  "SCMP_ARCH_X86",
  "SCMP_ARCH_X86_64",
  "SCMP_ARCH_X32",
  "SCMP_ARCH_ARM",
  "SCMP_ARCH_AARCH64",
  "SCMP_ARCH_MIPS",
  "SCMP_ARCH_MIPS64",
  "SCMP_ARCH_MIPS64N32",
  "SCMP_ARCH_MIPSEL",
  "SCMP_ARCH_MIPSEL64",
  "SCMP_ARCH_MIPSEL64N32",
  "SCMP_ARCH_PPC",
  "SCMP_ARCH_PPC64",
  "SCMP_ARCH_PPC64LE",
  "SCMP_ARCH_S390",
  "SCMP_ARCH_S390X",
  "SCMP_ARCH_PARISC",
  "SCMP_ARCH_PARISC64",
  "SCMP_ARCH_RISCV64",
  "SCMP_ARCH_LOONGARCH64",
]);

/** One argument condition: `args[index] op value` (MASKED_EQ: `args[index] & value == valueTwo`). */
export interface SeccompArg {
  index: number;
  value: number;
  valueTwo: number;
  op: SeccompOp;
}

/** One entry of `syscalls`. */
export interface SeccompRule {
  names: string[];
  action: SeccompAction;
  errnoRet?: number;
  args: SeccompArg[];
}

/** A validated `linux.seccomp`. */
export interface SeccompProfile {
  defaultAction: SeccompAction;
  defaultErrnoRet?: number;
  architectures: string[];
  /** `SECCOMP_FILTER_FLAG_*` bits to install with (see {@linkcode SECCOMP_FLAGS}). */
  flags: number;
  syscalls: SeccompRule[];
}
