/**
 * Fake cgroup trees for the tests of this folder: temp directories standing in for
 * `/sys/fs/cgroup`, with the control files the kernel would create.
 *
 * @module
 */

/** A temp dir standing in for /sys/fs/cgroup; `files` are what "the kernel" provides. */
export async function fakeRoot(files: Record<string, string>, links: Record<string, string> = {}) {
  const root = await Deno.makeTempDir({ prefix: "cgroup-fake-" });
  for (const [path, text] of Object.entries(files)) {
    const full = `${root}/${path}`;
    await Deno.mkdir(full.slice(0, full.lastIndexOf("/")), { recursive: true });
    await Deno.writeTextFile(full, text);
  }
  for (const [path, target] of Object.entries(links)) await Deno.symlink(target, `${root}/${path}`);
  return root;
}

export const read = (path: string) => Deno.readTextFile(path);

/** The files a v1 task cgroup has (as the kernel creates them), under `<root>/<ctl>/<path>`. */
export function v1Files(path: string): Record<string, string> {
  return {
    [`memory${path}/cgroup.procs`]: "",
    [`memory${path}/memory.limit_in_bytes`]: "9223372036854771712\n",
    [`memory${path}/memory.memsw.limit_in_bytes`]: "9223372036854771712\n",
    [`memory${path}/memory.soft_limit_in_bytes`]: "9223372036854771712\n",
    [`memory${path}/memory.usage_in_bytes`]: "1052672\n",
    [`memory${path}/memory.max_usage_in_bytes`]: "2000000\n",
    [`memory${path}/memory.failcnt`]: "3\n",
    [`memory${path}/memory.memsw.usage_in_bytes`]: "1052672\n",
    [`memory${path}/memory.memsw.max_usage_in_bytes`]: "2000000\n",
    [`memory${path}/memory.memsw.failcnt`]: "0\n",
    [`memory${path}/memory.oom_control`]: "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
    [`memory${path}/memory.stat`]: "cache 4096\nrss 1048576\npgpgin 10\npgpgout 5\n" +
      "pgfault 100\npgmajfault 1\nhierarchical_memory_limit 67108864\n" +
      "hierarchical_memsw_limit 9223372036854771712\ntotal_cache 4096\ntotal_pgfault 100\n",
    [`cpu${path}/cgroup.procs`]: "",
    [`cpu${path}/cpu.shares`]: "1024\n",
    [`cpu${path}/cpu.cfs_quota_us`]: "-1\n",
    [`cpu${path}/cpu.cfs_period_us`]: "100000\n",
    [`cpu${path}/cpu.stat`]: "nr_periods 5\nnr_throttled 1\nthrottled_time 1000\n",
    [`cpuacct${path}/cgroup.procs`]: "",
    [`cpuacct${path}/cpuacct.usage`]: "123456789\n",
    [`cpuacct${path}/cpuacct.usage_percpu`]: "100000000 23456789 \n",
    [`cpuacct${path}/cpuacct.stat`]: "user 7\nsystem 3\n",
    [`pids${path}/cgroup.procs`]: "",
    [`pids${path}/pids.current`]: "2\n",
    [`pids${path}/pids.max`]: "max\n",
  };
}

/** The files of a v2 hierarchy with a task cgroup at `path`. */
export function v2Files(path: string): Record<string, string> {
  const files: Record<string, string> = {
    "cgroup.controllers": "cpuset cpu io memory hugetlb pids rdma misc\n",
    "cgroup.subtree_control": "memory\n",
  };
  const parts = path.split("/").filter(Boolean);
  for (let i = 1; i < parts.length; i++) {
    const dir = parts.slice(0, i).join("/");
    files[`${dir}/cgroup.controllers`] = "cpu memory pids\n";
    files[`${dir}/cgroup.subtree_control`] = "";
  }
  const t = path.slice(1);
  Object.assign(files, {
    [`${t}/cgroup.controllers`]: "cpu memory pids\n",
    [`${t}/cgroup.procs`]: "",
    [`${t}/memory.max`]: "max\n",
    [`${t}/memory.low`]: "0\n",
    [`${t}/memory.swap.max`]: "max\n",
    [`${t}/memory.current`]: "4096\n",
    [`${t}/memory.peak`]: "8192\n",
    [`${t}/memory.swap.current`]: "0\n",
    [`${t}/memory.stat`]: "anon 1000\nfile 2000\nkernel_stack 16384\n" +
      "workingset_refault_anon 1\nworkingset_refault_file 2\npgfault 77\n",
    [`${t}/memory.events`]: "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
    [`${t}/cpu.weight`]: "100\n",
    [`${t}/cpu.max`]: "max 100000\n",
    [`${t}/cpu.stat`]: "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\n" +
      "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n",
    [`${t}/pids.current`]: "1\n",
    [`${t}/pids.max`]: "max\n",
  });
  return files;
}
