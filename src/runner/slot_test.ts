import assert from "node:assert/strict";
import { sweepWarmCgroups, WARM_CGROUP_PREFIX } from "./slot.ts";

/** The pid of a process that has exited (and been reaped). */
async function deadPid(): Promise<number> {
  const child = new Deno.Command("true", { stdout: "null", stderr: "null" }).spawn();
  await child.status;
  return child.pid;
}

Deno.test("sweepWarmCgroups removes only the warm cgroups of servers that are gone", async () => {
  const parent = await Deno.makeTempDir({ prefix: "warm-sweep-" });
  try {
    const dead = await deadPid();
    assert.equal(WARM_CGROUP_PREFIX, "wasmtime-warm-");
    const live = `wasmtime-warm-${Deno.pid}-1`;
    const gone = `wasmtime-warm-${dead}-2`;
    const busy = `wasmtime-warm-${dead}-3`; // not empty: on cgroupfs, still holding a process
    const file = `wasmtime-warm-${dead}-4`; // not a directory
    const odd = "wasmtime-warm-x-1"; // no pid
    for (const dir of [live, gone, busy, odd, "other", `${dead}-5`]) {
      await Deno.mkdir(`${parent}/${dir}`);
    }
    await Deno.writeTextFile(`${parent}/${busy}/cgroup.procs`, "");
    await Deno.writeTextFile(`${parent}/${file}`, "");
    sweepWarmCgroups(parent);
    const left = [...Deno.readDirSync(parent)].map((e) => e.name).sort();
    assert.deepEqual(left, [live, busy, file, odd, "other", `${dead}-5`].sort());
    sweepWarmCgroups(`${parent}/missing`); // no such parent: nothing to do
  } finally {
    await Deno.remove(parent, { recursive: true });
  }
});
