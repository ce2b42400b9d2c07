/**
 * A container's own seccomp profile (the OCI spec's `linux.seccomp`, as containerd's
 * CRI puts its `RuntimeDefault` profile there), compiled to classic BPF for a guest
 * runner. The runner installs it after its own filter (`seccomp.ts`): filters stack,
 * so a call must pass both.
 *
 * What the compiled filter does, as runc's libseccomp filters do:
 *
 * - a call of another ABI than this process's (i386 or x32 on x86-64, arm32 on arm64)
 *   gets the profile's default action when the profile lists that architecture, and
 *   kills the thread when it does not; the runner's own filter refuses such calls
 *   anyway (EPERM);
 * - with a default action that refuses (not ALLOW, LOG or TRACE), a call numbered above every
 *   call the profile names fails with ENOSYS, as runc does, so that libc falls back
 *   from a call newer than the profile to an older one;
 * - a call's rules with argument conditions are tried in the profile's order, the
 *   first whose conditions all hold deciding; then its first rule without conditions;
 *   then the default action. A rule that names one argument twice is split into one
 *   rule per condition (either may hold), as runc splits it;
 * - arguments are compared as unsigned 64-bit values, in two 32-bit halves;
 * - names this architecture does not know are skipped (a profile lists the calls of
 *   newer kernels and other architectures), as libseccomp and runc skip them.
 *
 * @module
 */

import { invalidArgument } from "../errdefs/errors.ts";
import {
  assemble,
  AUDIT_ARCH,
  BPF_ALU_AND_K,
  BPF_JEQ_K,
  BPF_JGE_K,
  BPF_JGT_K,
  BPF_LD_W_ABS,
  BPF_RET_K,
  type CompiledSeccomp,
  DATA_ARCH,
  DATA_ARGS,
  DATA_NR,
  ENOSYS,
  type FilterArch,
  type Insn,
  SECCOMP_RET_ALLOW,
  SECCOMP_RET_ERRNO,
  type SeccompAction,
  type SeccompArg,
  type SeccompProfile,
  type Target,
  X32_SYSCALL_BIT,
} from "./seccomp.ts";

export type { CompiledSeccomp, SeccompArg, SeccompProfile };
import { AARCH64_SYSCALLS, X86_64_SYSCALLS } from "./syscall_numbers.ts";

/** `AUDIT_ARCH_*` of the other ABIs a process of each architecture can call with. */
const OTHER_ABIS: Record<FilterArch, Record<string, number>> = {
  x86_64: { SCMP_ARCH_X86: 0x40000003 },
  aarch64: { SCMP_ARCH_ARM: 0x40000028 },
};

const SECCOMP_RET_KILL_PROCESS = 0x80000000;
const SECCOMP_RET_KILL_THREAD = 0x00000000;
const SECCOMP_RET_TRAP = 0x00030000;
const SECCOMP_RET_TRACE = 0x7ff00000;
const SECCOMP_RET_LOG = 0x7ffc0000;
const EPERM = 1;

/** The `SECCOMP_RET_*` value of an action (ERRNO and TRACE carry `errnoRet`, EPERM by default). */
export function actionValue(action: SeccompAction, errnoRet?: number): number {
  switch (action) {
    case "SCMP_ACT_KILL":
    case "SCMP_ACT_KILL_THREAD":
      return SECCOMP_RET_KILL_THREAD;
    case "SCMP_ACT_KILL_PROCESS":
      return SECCOMP_RET_KILL_PROCESS;
    case "SCMP_ACT_TRAP":
      return SECCOMP_RET_TRAP;
    case "SCMP_ACT_ERRNO":
      return (SECCOMP_RET_ERRNO | (errnoRet ?? EPERM)) >>> 0;
    case "SCMP_ACT_TRACE":
      return (SECCOMP_RET_TRACE | (errnoRet ?? EPERM)) >>> 0;
    case "SCMP_ACT_ALLOW":
      return SECCOMP_RET_ALLOW;
    case "SCMP_ACT_LOG":
      return SECCOMP_RET_LOG;
  }
}

/** The system call numbers of `arch`, by name. */
export function syscallNumbers(arch: FilterArch): Readonly<Record<string, number>> {
  return arch === "x86_64" ? X86_64_SYSCALLS : AARCH64_SYSCALLS;
}

/** A rule for one call: its action's value and its conditions (all must hold). */
interface CallRule {
  ret: number;
  args: SeccompArg[];
}

const hi = (v: number) => Math.floor(v / 2 ** 32) >>> 0;
const lo = (v: number) => v >>> 0;

/**
 * The instructions that fall through when `cond` holds and jump to `fail` when not.
 * `n` makes the labels unique.
 */
function condition(cond: SeccompArg, fail: string, n: string): Insn[] {
  const ld = (half: 0 | 4): Insn => ({ code: BPF_LD_W_ABS, k: DATA_ARGS + 8 * cond.index + half });
  const pass = `~pass${n}`;
  const [vh, vl] = [hi(cond.value), lo(cond.value)];
  // Ops on the high halves first; on a tie, the low halves decide.
  const ordered = (above: Target, below: Target, low: Insn): Insn[] => [
    ld(4),
    { code: BPF_JGT_K, k: vh, jt: above, jf: 0 },
    { code: BPF_JEQ_K, k: vh, jt: 0, jf: below },
    ld(0),
    low,
    { label: pass },
  ];
  switch (cond.op) {
    case "SCMP_CMP_EQ":
      return [
        ld(4),
        { code: BPF_JEQ_K, k: vh, jt: 0, jf: fail },
        ld(0),
        { code: BPF_JEQ_K, k: vl, jt: 0, jf: fail },
      ];
    case "SCMP_CMP_NE":
      return [
        ld(4),
        { code: BPF_JEQ_K, k: vh, jt: 0, jf: pass },
        ld(0),
        { code: BPF_JEQ_K, k: vl, jt: fail, jf: 0 },
        { label: pass },
      ];
    case "SCMP_CMP_GT":
      return ordered(pass, fail, { code: BPF_JGT_K, k: vl, jt: 0, jf: fail });
    case "SCMP_CMP_GE":
      return ordered(pass, fail, { code: BPF_JGE_K, k: vl, jt: 0, jf: fail });
    case "SCMP_CMP_LT":
      return ordered(fail, pass, { code: BPF_JGE_K, k: vl, jt: fail, jf: 0 });
    case "SCMP_CMP_LE":
      return ordered(fail, pass, { code: BPF_JGT_K, k: vl, jt: fail, jf: 0 });
    case "SCMP_CMP_MASKED_EQ": {
      const [mh, ml] = [vh, vl];
      const [wh, wl] = [hi(cond.valueTwo), lo(cond.valueTwo)];
      return [
        ld(4),
        { code: BPF_ALU_AND_K, k: mh },
        { code: BPF_JEQ_K, k: wh, jt: 0, jf: fail },
        ld(0),
        { code: BPF_ALU_AND_K, k: ml },
        { code: BPF_JEQ_K, k: wl, jt: 0, jf: fail },
      ];
    }
  }
}

/**
 * Compiles `profile` for `arch`.
 *
 * @throws {ShimError} INVALID_ARGUMENT when the profile names calls but none this
 *   architecture knows, or needs more instructions than the kernel takes
 */
export function compileSeccompProfile(
  profile: SeccompProfile,
  arch: FilterArch,
  where = "linux.seccomp",
): CompiledSeccomp {
  const numbers = syscallNumbers(arch);
  const defaultRet = actionValue(profile.defaultAction, profile.defaultErrnoRet);
  /** Rules by call number, in the profile's order. */
  const byCall = new Map<number, CallRule[]>();
  let named = 0;
  for (const rule of profile.syscalls) {
    const ret = actionValue(rule.action, rule.errnoRet);
    const indexes = rule.args.map((a) => a.index);
    const split = new Set(indexes).size < indexes.length;
    const rules: CallRule[] = split
      ? rule.args.map((a) => ({ ret, args: [a] }))
      : [{ ret, args: rule.args }];
    for (const name of rule.names) {
      named++;
      const nr = numbers[name];
      if (nr === undefined) continue;
      const list = byCall.get(nr) ?? [];
      list.push(...rules);
      byCall.set(nr, list);
    }
  }
  if (named > 0 && byCall.size === 0) {
    throw invalidArgument(
      `${where}: none of the ${named} system call names is one ${arch} knows ` +
        `(a profile for another architecture?)`,
    );
  }
  const listed = new Set(profile.architectures);
  const retLabel = (ret: number) => `~ret${ret >>> 0}`;
  const rets = new Set<number>([defaultRet]);
  const program: Insn[] = [{ code: BPF_LD_W_ABS, k: DATA_ARCH }];
  // Other ABIs: the default action when listed, else kill the thread (libseccomp's).
  const badArch = SECCOMP_RET_KILL_THREAD;
  for (const [name, audit] of Object.entries(OTHER_ABIS[arch])) {
    const ret = listed.has(name) ? defaultRet : badArch;
    rets.add(ret);
    program.push({ code: BPF_JEQ_K, k: audit, jt: retLabel(ret), jf: 0 });
  }
  rets.add(badArch);
  program.push(
    { code: BPF_JEQ_K, k: AUDIT_ARCH[arch], jt: 0, jf: retLabel(badArch) },
    { code: BPF_LD_W_ABS, k: DATA_NR },
  );
  if (arch === "x86_64") {
    const ret = listed.has("SCMP_ARCH_X32") ? defaultRet : badArch;
    rets.add(ret);
    program.push({ code: BPF_JGE_K, k: X32_SYSCALL_BIT, jt: retLabel(ret), jf: 0 });
  }
  // TRACE counts as allowing, as for runc: a tracer handles newer calls itself.
  const refuses = !["SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_TRACE"].includes(
    profile.defaultAction,
  );
  if (refuses && byCall.size > 0) {
    const enosys = SECCOMP_RET_ERRNO | ENOSYS;
    rets.add(enosys);
    program.push({ code: BPF_JGT_K, k: Math.max(...byCall.keys()), jt: retLabel(enosys), jf: 0 });
  }
  // Where each call goes: straight to a return, or to its block of conditional rules.
  const calls = [...byCall.keys()].sort((a, b) => a - b);
  const blocks: Insn[] = [];
  const handler = new Map<number, string>();
  for (const nr of calls) {
    const rules = byCall.get(nr)!;
    const conditional = rules.filter((r) => r.args.length > 0);
    const plain = rules.find((r) => r.args.length === 0);
    const fallback = plain?.ret ?? defaultRet;
    rets.add(fallback);
    if (conditional.length === 0) {
      handler.set(nr, retLabel(fallback));
      continue;
    }
    handler.set(nr, `~call${nr}`);
    blocks.push({ label: `~call${nr}` });
    conditional.forEach((rule, r) => {
      const fail = `~fail${nr}_${r}`;
      rule.args.forEach((a, c) => blocks.push(...condition(a, fail, `${nr}_${r}_${c}`)));
      rets.add(rule.ret);
      blocks.push({ code: BPF_RET_K, k: rule.ret }, { label: fail });
    });
    blocks.push({ code: BPF_RET_K, k: fallback });
  }
  // A binary search on the call number (A holds it), small ranges compared one by one.
  const search = (from: number, to: number, id: string): Insn[] => {
    if (to - from <= 4) {
      return [
        ...calls.slice(from, to).map((nr): Insn => ({
          code: BPF_JEQ_K,
          k: nr,
          jt: handler.get(nr)!,
          jf: 0,
        })),
        { code: BPF_RET_K, k: defaultRet },
      ];
    }
    const mid = (from + to) >> 1;
    const right = `~ge${id}`;
    return [
      { code: BPF_JGE_K, k: calls[mid], jt: right, jf: 0 },
      ...search(from, mid, `${id}l`),
      { label: right },
      ...search(mid, to, `${id}r`),
    ];
  };
  program.push(...search(0, calls.length, ""), ...blocks);
  for (const ret of rets) program.push({ label: retLabel(ret) }, { code: BPF_RET_K, k: ret });
  let filter: Uint8Array<ArrayBuffer>;
  try {
    filter = assemble(program);
  } catch (err) {
    throw invalidArgument(`${where}: ${(err as Error).message}`);
  }
  return {
    filter: encodeBase64(filter),
    flags: profile.flags,
    instructions: filter.length / 8,
  };
}

/** Base64 of `bytes`. */
function encodeBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}
