/**
 * Generates `src/sys/syscall_numbers.ts`, the system call numbers of x86-64 and arm64 by
 * name, from the kernel's UAPI headers (Debian's `linux-libc-dev`):
 *
 * - x86-64: `/usr/include/x86_64-linux-gnu/asm/unistd_64.h`, plain `#define __NR_x N`;
 * - arm64: `/usr/include/asm-generic/unistd.h` (arm64 has no table of its own: its
 *   `asm/unistd.h` defines a few `__ARCH_WANT_*` macros, then includes the generic one),
 *   read with those macros and `__BITS_PER_LONG` 64, as the arm64 compiler reads it.
 *
 * Numbers of the kernel ABI never change; newer headers only add calls. The committed
 * file names the headers' version; `gen_syscalls_test.ts` checks that the file is what
 * this script makes of the headers.
 *
 * Usage: `deno run --allow-read --allow-write scripts/gen_syscalls.ts [--check]`
 *
 * @module
 */

/** Where Debian puts the headers. */
export const HEADERS = {
  x86_64: "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
  generic: "/usr/include/asm-generic/unistd.h",
  version: "/usr/include/linux/version.h",
} as const;

/** The generated file. */
export const OUTPUT_FILE = new URL("../src/sys/syscall_numbers.ts", import.meta.url).pathname;

/** What arm64's `asm/unistd.h` defines before it includes `asm-generic/unistd.h`. */
const ARM64_MACROS = new Set([
  "__ARCH_WANT_RENAMEAT",
  "__ARCH_WANT_NEW_STAT",
  "__ARCH_WANT_SET_GET_RLIMIT",
  "__ARCH_WANT_TIME32_SYSCALLS",
  "__ARCH_WANT_SYS_CLONE3",
  "__ARCH_WANT_MEMFD_SECRET",
]);

/** The headers' text, as {@linkcode generate} takes it. */
export interface Headers {
  /** `unistd_64.h` of x86-64. */
  x86_64: string;
  /** `asm-generic/unistd.h`. */
  generic: string;
  /** `linux/version.h`. */
  version: string;
}

/** Reads {@linkcode HEADERS}, saying which package provides them when one is missing. */
export async function readHeaders(): Promise<Headers> {
  const read = async (path: string) => {
    try {
      return await Deno.readTextFile(path);
    } catch (err) {
      throw new Error(
        `cannot read ${path} (Debian's linux-libc-dev: apt-get install linux-libc-dev): ${
          (err as Error).message
        }`,
      );
    }
  };
  return {
    x86_64: await read(HEADERS.x86_64),
    generic: await read(HEADERS.generic),
    version: await read(HEADERS.version),
  };
}

/** `LINUX_VERSION_MAJOR.PATCHLEVEL.SUBLEVEL` of `linux/version.h`. */
export function headersVersion(text: string): string {
  const part = (name: string) => {
    const m = text.match(new RegExp(`^#define LINUX_VERSION_${name} (\\d+)$`, "m"));
    if (m === null) throw new Error(`linux/version.h has no LINUX_VERSION_${name}`);
    return m[1];
  };
  return `${part("MAJOR")}.${part("PATCHLEVEL")}.${part("SUBLEVEL")}`;
}

/** `#define __NR_name N` lines of x86-64's `unistd_64.h`. */
export function parseX86_64(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of text.matchAll(/^#define __NR_(\w+)\s+(\d+)\s*$/gm)) {
    out.set(m[1], Number(m[2]));
  }
  if (out.size === 0) throw new Error(`${HEADERS.x86_64} defines no __NR_ numbers`);
  return out;
}

/**
 * Evaluates a `#if` condition of `asm-generic/unistd.h` for a 64-bit architecture that
 * defines `macros`: `defined(X)`, `__BITS_PER_LONG`, numbers, `==`, `!=`, `!`, `&&`, `||`
 * and parentheses, which is all the header uses.
 */
function evalCondition(expr: string, macros: ReadonlySet<string>): boolean {
  const tokens =
    expr.replace(/\/\*.*?\*\//g, "").match(/defined\s*\(\s*\w+\s*\)|\w+|==|!=|&&|\|\||[!()]/g) ??
      [];
  let pos = 0;
  const value = (t: string): number => {
    const d = t.match(/^defined\s*\(\s*(\w+)\s*\)$/);
    if (d) return macros.has(d[1]) ? 1 : 0;
    if (t === "__BITS_PER_LONG") return 64;
    if (/^\d+$/.test(t)) return Number(t);
    return macros.has(t) ? 1 : 0;
  };
  const primary = (): number => {
    const t = tokens[pos++];
    if (t === "!") return primary() ? 0 : 1;
    if (t === "(") {
      const v = or();
      if (tokens[pos++] !== ")") throw new Error(`unbalanced #if ${expr}`);
      return v;
    }
    if (t === undefined) throw new Error(`incomplete #if ${expr}`);
    return value(t);
  };
  const equality = (): number => {
    let v = primary();
    while (tokens[pos] === "==" || tokens[pos] === "!=") {
      const op = tokens[pos++];
      const r = primary();
      v = (op === "==") === (v === r) ? 1 : 0;
    }
    return v;
  };
  const and = (): number => {
    let v = equality();
    while (tokens[pos] === "&&") {
      pos++;
      const r = equality();
      v = v && r ? 1 : 0;
    }
    return v;
  };
  const or = (): number => {
    let v = and();
    while (tokens[pos] === "||") {
      pos++;
      const r = and();
      v = v || r ? 1 : 0;
    }
    return v;
  };
  const v = or();
  if (pos !== tokens.length) throw new Error(`cannot read #if ${expr}`);
  return v !== 0;
}

/**
 * The numbers `asm-generic/unistd.h` gives a 64-bit architecture defining `macros`:
 * its `#define __NR_x N` and `#define __NR_x __NR3264_y` lines in the branches its
 * conditionals take.
 */
export function parseGeneric(text: string, macros: ReadonlySet<string> = ARM64_MACROS) {
  const defined = new Set(macros);
  const numbers = new Map<string, number>();
  const out = new Map<string, number>();
  /** Per open conditional: whether its current branch is taken, and whether one was. */
  const stack: { on: boolean; taken: boolean }[] = [];
  /** Names given a table entry: `__SYSCALL(__NR_x, …)`, `__SC_COMP(__NR_x, …)`, … */
  const entries = new Set(
    [...text.matchAll(/^\s*__S(?:YSCALL|C_\w+)\(\s*(\w+)\s*,/gm)].map((m) => m[1]),
  );
  const active = () => stack.every((s) => s.on);
  text.split("\n").forEach((line, i) => {
    const directive = line.match(/^\s*#\s*(\w+)\s*(.*)$/);
    if (directive === null) return;
    const [, word, rest] = directive;
    const where = `${HEADERS.generic}:${i + 1}`;
    switch (word) {
      case "if":
      case "ifdef":
      case "ifndef": {
        const cond = word === "if"
          ? evalCondition(rest, defined)
          : defined.has(rest.trim().split(/\s/)[0]) === (word === "ifdef");
        stack.push({ on: cond, taken: cond });
        return;
      }
      case "else": {
        const top = stack.at(-1);
        if (top === undefined) throw new Error(`${where}: #else without #if`);
        top.on = !top.taken;
        top.taken = true;
        return;
      }
      case "endif":
        if (stack.pop() === undefined) throw new Error(`${where}: #endif without #if`);
        return;
      case "elif":
        throw new Error(`${where}: #elif is not read by this script`);
      case "undef":
        return;
      case "define": {
        if (!active()) return;
        const m = rest.match(/^(\w+)\s+(\w+)/);
        if (m === null) {
          const name = rest.trim().split(/[\s(]/)[0];
          if (name !== "") defined.add(name);
          return;
        }
        const [, name, body] = m;
        defined.add(name);
        const n = /^\d+$/.test(body) ? Number(body) : numbers.get(body);
        if (n === undefined) return; // a function-like or other macro
        numbers.set(name, n);
        const nr = name.match(/^__NR_(\w+)$/);
        // A call only if its number (or the __NR3264_ one it names) has a table entry:
        // `__NR_syscalls` and `__NR_arch_specific_syscall` are bounds, not calls.
        if (nr && (entries.has(name) || entries.has(body))) out.set(nr[1], n);
        return;
      }
    }
  });
  if (stack.length > 0) throw new Error(`${HEADERS.generic}: unterminated #if`);
  if (out.size === 0) throw new Error(`${HEADERS.generic} defines no __NR_ numbers`);
  return out;
}

/** The module's text: two tables sorted by number, and the headers' version. */
export function generate(headers: Headers): string {
  const table = (name: string, arch: string, numbers: Map<string, number>) => {
    const rows = [...numbers].sort((a, b) => a[1] - b[1] || (a[0] < b[0] ? -1 : 1))
      .map(([call, n]) => `  ${call}: ${n},\n`).join("");
    return `/** System call numbers of ${arch}, by name. */\n` +
      `export const ${name}: Readonly<Record<string, number>> = {\n${rows}};\n`;
  };
  return [
    "/**\n" +
    " * System call numbers by name, of x86-64 and arm64 (64-bit ABIs), from the Linux\n" +
    " * UAPI headers. Generated by `scripts/gen_syscalls.ts`: do not edit.\n" +
    " *\n" +
    " * @module\n" +
    " */\n",
    `/** The version of the headers read. */\nexport const HEADERS_VERSION = "${
      headersVersion(headers.version)
    }";\n`,
    table("X86_64_SYSCALLS", "x86-64 (`asm/unistd_64.h`)", parseX86_64(headers.x86_64)),
    table(
      "AARCH64_SYSCALLS",
      "arm64 (`asm-generic/unistd.h` with arm64's macros)",
      parseGeneric(headers.generic),
    ),
  ].join("\n");
}

if (import.meta.main) {
  const text = generate(await readHeaders());
  if (Deno.args.includes("--check")) {
    const committed = await Deno.readTextFile(OUTPUT_FILE);
    if (committed !== text) {
      console.error(`${OUTPUT_FILE} is stale: run deno run -A scripts/gen_syscalls.ts`);
      Deno.exit(1);
    }
  } else {
    await Deno.writeTextFile(OUTPUT_FILE, text);
  }
}
