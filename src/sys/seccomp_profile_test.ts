import assert from "node:assert/strict";
import { Kind, ShimError } from "../errdefs/errors.ts";
import {
  compileSeccompProfile,
  type SeccompArg,
  type SeccompProfile,
  syscallNumbers,
} from "./seccomp_profile.ts";
import { type FilterArch, filterBytes } from "./seccomp.ts";

const X86_64 = 0xc000003e;
const I386 = 0x40000003;
const AARCH64 = 0xc00000b7;
const ARM = 0x40000028;
const ALLOW = 0x7fff0000;
const KILL_THREAD = 0;
const errno = (n: number) => 0x00050000 | n;

/**
 * Runs a classic BPF seccomp filter on one `struct seccomp_data`, as the kernel does
 * (only the instructions seccomp accepts and the compiler emits).
 */
function run(filter: Uint8Array, arch: number, nr: number, args: bigint[] = []): number {
  const view = new DataView(filter.buffer, filter.byteOffset, filter.byteLength);
  const data = new DataView(new ArrayBuffer(64));
  data.setUint32(0, nr, true);
  data.setUint32(4, arch, true);
  args.forEach((a, i) => data.setBigUint64(16 + 8 * i, a, true));
  let a = 0;
  for (let pc = 0, steps = 0; steps < 100_000; steps++) {
    const code = view.getUint16(pc * 8, true);
    const jt = view.getUint8(pc * 8 + 2);
    const jf = view.getUint8(pc * 8 + 3);
    const k = view.getUint32(pc * 8 + 4, true);
    pc++;
    switch (code) {
      case 0x20: // ld [k]
        a = data.getUint32(k, true);
        break;
      case 0x54: // and #k
        a = (a & k) >>> 0;
        break;
      case 0x05: // ja
        pc += k;
        break;
      case 0x15: // jeq
        pc += a === k ? jt : jf;
        break;
      case 0x25: // jgt
        pc += a > k ? jt : jf;
        break;
      case 0x35: // jge
        pc += a >= k ? jt : jf;
        break;
      case 0x45: // jset
        pc += (a & k) !== 0 ? jt : jf;
        break;
      case 0x06: // ret
        return k;
      default:
        throw new Error(`instruction ${code.toString(16)} at ${pc - 1}`);
    }
  }
  throw new Error("no return");
}

function profile(p: Partial<SeccompProfile>): SeccompProfile {
  return { defaultAction: "SCMP_ACT_ALLOW", architectures: [], flags: 0, syscalls: [], ...p };
}

function compiled(p: SeccompProfile, arch: FilterArch = "x86_64") {
  return filterBytes(compileSeccompProfile(p, arch));
}

const arg = (index: number, op: SeccompArg["op"], value: number, valueTwo = 0): SeccompArg => ({
  index,
  op,
  value,
  valueTwo,
});

Deno.test("profile: default action, a named call's action and errnoRet, EPERM by default", () => {
  const nr = syscallNumbers("x86_64");
  const f = compiled(profile({
    defaultAction: "SCMP_ACT_ERRNO",
    defaultErrnoRet: 38,
    syscalls: [
      { names: ["read", "write", "no_such_call"], action: "SCMP_ACT_ALLOW", args: [] },
      { names: ["mkdir"], action: "SCMP_ACT_ERRNO", args: [] },
      { names: ["rmdir"], action: "SCMP_ACT_ERRNO", errnoRet: 30, args: [] },
      { names: ["kill"], action: "SCMP_ACT_KILL_PROCESS", args: [] },
      { names: ["tkill"], action: "SCMP_ACT_KILL", args: [] },
      { names: ["tgkill"], action: "SCMP_ACT_TRAP", args: [] },
      { names: ["ptrace"], action: "SCMP_ACT_TRACE", args: [] },
      { names: ["getpid"], action: "SCMP_ACT_LOG", args: [] },
    ],
  }));
  assert.equal(run(f, X86_64, nr.read), ALLOW);
  assert.equal(run(f, X86_64, nr.write), ALLOW);
  assert.equal(run(f, X86_64, nr.mkdir), errno(1));
  assert.equal(run(f, X86_64, nr.rmdir), errno(30));
  assert.equal(run(f, X86_64, nr.kill), 0x80000000);
  assert.equal(run(f, X86_64, nr.tkill), KILL_THREAD);
  assert.equal(run(f, X86_64, nr.tgkill), 0x00030000);
  assert.equal(run(f, X86_64, nr.ptrace), 0x7ff00001);
  assert.equal(run(f, X86_64, nr.getpid), 0x7ffc0000);
  assert.equal(run(f, X86_64, nr.open), errno(38), "the default action and its errnoRet");
  assert.equal(run(f, X86_64, 1000), errno(38), "above every named call: ENOSYS");
});

Deno.test("profile: calls above every named one get ENOSYS when the default refuses", () => {
  const nr = syscallNumbers("aarch64");
  const named = [{ names: ["openat"], action: "SCMP_ACT_ALLOW" as const, args: [] }];
  const refusing = compiled(
    profile({ defaultAction: "SCMP_ACT_ERRNO", syscalls: named }),
    "aarch64",
  );
  assert.equal(run(refusing, AARCH64, nr.openat), ALLOW);
  assert.equal(run(refusing, AARCH64, nr.getcwd), errno(1), "below: the default");
  assert.equal(run(refusing, AARCH64, nr.clone3), errno(38));
  const allowing = compiled(
    profile({ defaultAction: "SCMP_ACT_ALLOW", syscalls: named }),
    "aarch64",
  );
  assert.equal(run(allowing, AARCH64, nr.clone3), ALLOW);
  const tracing = compiled(
    profile({ defaultAction: "SCMP_ACT_TRACE", syscalls: named }),
    "aarch64",
  );
  assert.equal(run(tracing, AARCH64, nr.clone3), 0x7ff00001, "a tracer sees newer calls");
});

Deno.test("profile: other ABIs get the default action when listed, else the thread is killed", () => {
  const p = (architectures: string[]) =>
    profile({ defaultAction: "SCMP_ACT_ERRNO", architectures });
  const listed = compiled(p(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]));
  assert.equal(run(listed, I386, 20), errno(1));
  assert.equal(run(listed, X86_64, 0x40000000 | 39), errno(1), "x32");
  const native = compiled(p(["SCMP_ARCH_X86_64"]));
  assert.equal(run(native, I386, 20), KILL_THREAD);
  assert.equal(run(native, X86_64, 0x40000000 | 39), KILL_THREAD);
  assert.equal(run(native, AARCH64, 20), KILL_THREAD);
  const arm = compiled(
    profile({ defaultAction: "SCMP_ACT_LOG", architectures: ["SCMP_ARCH_ARM"] }),
    "aarch64",
  );
  assert.equal(run(arm, ARM, 20), 0x7ffc0000);
  assert.equal(run(arm, X86_64, 20), KILL_THREAD);
});

Deno.test("profile: argument comparisons on 64-bit values, both ways and at the halves' edges", () => {
  const nr = syscallNumbers("x86_64").personality;
  const big = 2 ** 32 + 5; // high half 1, low half 5
  const cases: [SeccompArg, bigint[], bigint[]][] = [
    // [condition, values that hold, values that do not]
    [arg(0, "SCMP_CMP_EQ", big), [BigInt(big)], [5n, 1n << 32n, BigInt(big) + 1n]],
    [arg(0, "SCMP_CMP_NE", big), [5n, 1n << 32n, 0n], [BigInt(big)]],
    [arg(0, "SCMP_CMP_GT", big), [BigInt(big) + 1n, 2n << 32n], [BigInt(big), 6n, 0xffffffffn]],
    [arg(0, "SCMP_CMP_GE", big), [BigInt(big), 2n << 32n], [BigInt(big) - 1n, 6n]],
    [arg(0, "SCMP_CMP_LT", big), [BigInt(big) - 1n, 0xffffffffn, 6n], [BigInt(big), 2n << 32n]],
    [arg(0, "SCMP_CMP_LE", big), [BigInt(big), 0xffffffffn], [BigInt(big) + 1n, 2n << 32n]],
    [
      arg(2, "SCMP_CMP_MASKED_EQ", 0x7e020000 + 2 ** 40, 0),
      [0n, 0x100n, 1n << 41n],
      [0x10000000n, 0x20000n, 1n << 40n],
    ],
  ];
  for (const [cond, hold, not] of cases) {
    const f = compiled(profile({
      syscalls: [{ names: ["personality"], action: "SCMP_ACT_ERRNO", errnoRet: 13, args: [cond] }],
    }));
    const at = (v: bigint) => {
      const args = [0n, 0n, 0n];
      args[cond.index] = v;
      return args;
    };
    for (const v of hold) assert.equal(run(f, X86_64, nr, at(v)), errno(13), `${cond.op} ${v}`);
    for (const v of not) assert.equal(run(f, X86_64, nr, at(v)), ALLOW, `not ${cond.op} ${v}`);
  }
});

Deno.test("profile: a rule's conditions all hold (AND); a call's rules are tried in order (OR)", () => {
  const nr = syscallNumbers("x86_64").socket;
  const f = compiled(profile({
    defaultAction: "SCMP_ACT_ERRNO",
    syscalls: [
      // AF_INET (2) and SOCK_STREAM (1): allowed.
      {
        names: ["socket"],
        action: "SCMP_ACT_ALLOW",
        args: [arg(0, "SCMP_CMP_EQ", 2), arg(1, "SCMP_CMP_EQ", 1)],
      },
      // AF_VSOCK (40): EACCES.
      {
        names: ["socket"],
        action: "SCMP_ACT_ERRNO",
        errnoRet: 13,
        args: [arg(0, "SCMP_CMP_EQ", 40)],
      },
      // Either of two values of one argument (split into two rules, as runc does).
      {
        names: ["socket"],
        action: "SCMP_ACT_LOG",
        args: [arg(0, "SCMP_CMP_EQ", 1), arg(0, "SCMP_CMP_EQ", 16)],
      },
      // Without conditions: what the others leave.
      { names: ["socket"], action: "SCMP_ACT_ERRNO", errnoRet: 97, args: [] },
    ],
  }));
  assert.equal(run(f, X86_64, nr, [2n, 1n]), ALLOW);
  assert.equal(run(f, X86_64, nr, [2n, 2n]), errno(97), "one condition of two");
  assert.equal(run(f, X86_64, nr, [40n, 1n]), errno(13));
  assert.equal(run(f, X86_64, nr, [1n]), 0x7ffc0000);
  assert.equal(run(f, X86_64, nr, [16n]), 0x7ffc0000);
  assert.equal(run(f, X86_64, nr, [10n, 1n]), errno(97));
});

Deno.test("profile: every known call allowed, on both architectures, within BPF's limits", () => {
  for (const arch of ["x86_64", "aarch64"] as const) {
    const numbers = syscallNumbers(arch);
    const names = Object.keys(numbers);
    // Each name its own rule, a third with argument conditions (long jumps to chain).
    const syscalls = names.map((name, i) => ({
      names: [name],
      action: "SCMP_ACT_ALLOW" as const,
      args: i % 3 === 0 ? [arg(0, "SCMP_CMP_MASKED_EQ", 0x7e020000, 0)] : [],
    }));
    const c = compileSeccompProfile(profile({ defaultAction: "SCMP_ACT_ERRNO", syscalls }), arch);
    assert.ok(c.instructions < 4096, `${c.instructions} instructions`);
    const f = filterBytes(c);
    const audit = arch === "x86_64" ? X86_64 : AARCH64;
    names.forEach((name, i) => {
      assert.equal(run(f, audit, numbers[name], [0n]), ALLOW, name);
      if (i % 3 === 0) assert.equal(run(f, audit, numbers[name], [0x20000n]), errno(1), name);
    });
  }
});

Deno.test("profile: names no call of this architecture → INVALID_ARGUMENT", () => {
  assert.throws(
    () =>
      compileSeccompProfile(
        profile({
          syscalls: [{
            names: ["arm_fadvise64_64", "no_such"],
            action: "SCMP_ACT_ALLOW",
            args: [],
          }],
        }),
        "x86_64",
        "spec X: linux.seccomp",
      ),
    (err: unknown) =>
      err instanceof ShimError && err.kind === Kind.INVALID_ARGUMENT &&
      /spec X: linux\.seccomp: none of the 2 system call names is one x86_64 knows/.test(
        err.message,
      ),
  );
  // No names at all is a profile of a default action only.
  assert.ok(compileSeccompProfile(profile({}), "x86_64").instructions > 0);
});

/**
 * A process that installs the profile given as JSON in its first argument, then makes
 * each call of the second (`[nr, ...args]`) with syscall(2), printing `[result, errno]`
 * of each as JSON.
 */
const PROBE = `
import { compileSeccompProfile } from ${
  JSON.stringify(new URL("./seccomp_profile.ts", import.meta.url).href)
};
import { installSeccompProfile } from ${
  JSON.stringify(new URL("./seccomp.ts", import.meta.url).href)
};
const lib = Deno.dlopen("libc.so.6", {
  syscall: { parameters: ["i64", "u64", "u64", "u64", "u64", "u64", "u64"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
});
const [profile, calls] = Deno.args.map((a) => JSON.parse(a));
installSeccompProfile(compileSeccompProfile(profile, Deno.build.arch));
const out = calls.map(([nr, ...args]) => {
  const a = [0, 1, 2, 3, 4, 5].map((i) => BigInt(args[i] ?? 0));
  const r = Number(lib.symbols.syscall(BigInt(nr), ...a));
  return [r, r === -1 ? new Deno.UnsafePointerView(lib.symbols.__errno_location()).getInt32() : 0];
});
const status = Deno.readTextFileSync("/proc/self/status");
console.log(JSON.stringify({ out, filters: Number(status.match(/^Seccomp_filters:\\s+(\\d+)/m)[1]) }));
`;

Deno.test({
  name:
    "profile: installed in a process, the kernel applies it (calls, errno, args, ABIs, default)",
  ignore: Deno.build.os !== "linux" || Deno.build.arch !== "x86_64",
  async fn() {
    const nr = syscallNumbers("x86_64");
    const probe = await Deno.makeTempFile({ suffix: ".js" });
    try {
      await Deno.writeTextFile(probe, PROBE);
      // An allow-list of every call but a few, as RuntimeDefault is an allow-list.
      const denied = new Set(["getppid", "getpgid", "flock", "personality", "futex_waitv"]);
      const profile: SeccompProfile = {
        defaultAction: "SCMP_ACT_ERRNO",
        defaultErrnoRet: 99,
        architectures: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"],
        flags: 0,
        syscalls: [
          {
            names: Object.keys(nr).filter((n) => !denied.has(n) && nr[n] < nr.futex_waitv),
            action: "SCMP_ACT_ALLOW",
            args: [],
          },
          {
            names: ["getpgid"],
            action: "SCMP_ACT_ERRNO",
            errnoRet: 21,
            args: [arg(0, "SCMP_CMP_GT", 1000)],
          },
          { names: ["getpgid"], action: "SCMP_ACT_ALLOW", args: [] },
          {
            names: ["personality"],
            action: "SCMP_ACT_ALLOW",
            args: [arg(0, "SCMP_CMP_EQ", 0xffffffff)],
          },
          {
            names: ["flock"],
            action: "SCMP_ACT_ERRNO",
            errnoRet: 55,
            args: [arg(1, "SCMP_CMP_MASKED_EQ", 4, 4)],
          },
          { names: ["flock"], action: "SCMP_ACT_ALLOW", args: [] },
        ],
      };
      const calls = [
        [nr.getppid],
        [nr.getpgid, 0],
        [nr.getpgid, 5000],
        [nr.personality, 0xffffffff],
        [nr.personality, 8],
        [nr.flock, 999, 1 | 4],
        [nr.flock, 999, 1],
        [0x40000000 | nr.getppid],
        [nr.futex_waitv],
      ];
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", probe, JSON.stringify(profile), JSON.stringify(calls)],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
      const r = JSON.parse(text);
      assert.ok(r.filters >= 1, text);
      const [getppid, pgid0, pgid5000, personaGet, personaSet, flockNb, flock, x32, newer] = r.out;
      assert.deepEqual(getppid, [-1, 99], "not allowed: the default action and errnoRet");
      assert.ok(pgid0[0] > 0, "getpgid(0) allowed");
      assert.deepEqual(pgid5000, [-1, 21], "getpgid(5000): the condition holds");
      assert.ok(personaGet[0] >= 0, "personality(0xffffffff) allowed");
      assert.deepEqual(personaSet, [-1, 99], "personality(8): no rule holds, the default");
      assert.deepEqual(flockNb, [-1, 55], "flock(LOCK_NB): the masked condition holds");
      assert.deepEqual(flock, [-1, 9], "flock(999, LOCK_SH) reaches the kernel: EBADF");
      assert.deepEqual(x32, [-1, 99], "x32 listed: the default action");
      assert.deepEqual(newer, [-1, 38], "above every named call: ENOSYS");
    } finally {
      await Deno.remove(probe);
    }
  },
});
