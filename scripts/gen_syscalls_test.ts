import assert from "node:assert/strict";
import {
  generate,
  headersVersion,
  OUTPUT_FILE,
  parseGeneric,
  parseX86_64,
  readHeaders,
} from "./gen_syscalls.ts";
import { AARCH64_SYSCALLS, HEADERS_VERSION, X86_64_SYSCALLS } from "../src/sys/syscall_numbers.ts";

const STALE = "run `deno run -A scripts/gen_syscalls.ts`";

Deno.test("src/sys/syscall_numbers.ts is what gen_syscalls.ts makes of the kernel headers", async () => {
  const headers = await readHeaders();
  const version = headersVersion(headers.version);
  if (version === HEADERS_VERSION) {
    assert.ok(
      (await Deno.readTextFile(OUTPUT_FILE)) === generate(headers),
      `src/sys/syscall_numbers.ts is stale: ${STALE}`,
    );
    return;
  }
  // Other headers (another Debian): the kernel never renumbers a call, so every number
  // committed must be theirs, and they may only add calls numbered past ours.
  for (
    const [committed, fresh] of [
      [X86_64_SYSCALLS, parseX86_64(headers.x86_64)],
      [AARCH64_SYSCALLS, parseGeneric(headers.generic)],
    ] as const
  ) {
    const top = Math.max(...Object.values(committed));
    for (const [name, n] of Object.entries(committed)) {
      assert.equal(
        fresh.get(name),
        n,
        `${name}: headers ${version} disagree with ${HEADERS_VERSION}`,
      );
    }
    for (const [name, n] of fresh) {
      if (n <= top) assert.ok(name in committed, `${name} (${n}) is missing: ${STALE}`);
    }
  }
});

Deno.test("gen_syscalls reads the generic header's conditionals as a 64-bit arm64 compiler", () => {
  const text = [
    "#define __NR_a 1",
    "__SYSCALL(__NR_a, sys_a)",
    "#if __BITS_PER_LONG == 32 || defined(__SYSCALL_COMPAT)",
    "#define __NR_b 2",
    "__SYSCALL(__NR_b, sys_b)",
    "#else",
    "#define __NR_c 3",
    "__SYSCALL(__NR_c, sys_c)",
    "#endif",
    "#ifdef __ARCH_WANT_SYS_CLONE3",
    "#define __NR_clone3 435",
    "__SYSCALL(__NR_clone3, sys_clone3)",
    "#endif",
    "#ifdef __ARCH_WANT_NOTHING",
    "#define __NR_d 4",
    "__SYSCALL(__NR_d, sys_d)",
    "#endif",
    "#define __NR3264_e 5",
    "__SC_3264(__NR3264_e, sys_e64, sys_e)",
    "#if !defined(__SYSCALL_COMPAT) && (__BITS_PER_LONG != 32)",
    "#define __NR_e __NR3264_e",
    "#endif",
    "#define __NR_arch_specific_syscall 244",
    "#define __NR_syscalls 451",
  ].join("\n");
  assert.deepEqual(
    Object.fromEntries(parseGeneric(text)),
    { a: 1, c: 3, clone3: 435, e: 5 },
  );
});
