import assert from "node:assert/strict";
import { createLogger } from "./log.ts";

/** A logrus text line: `time="…" level=… msg="…"` then ` key="value"` fields. */
const LINE = /^time="[^"]+" level=(\w+) msg="((?:[^"\\]|\\.)*)"((?: \w+="[^"]*")*)\n$/;

Deno.test("createLogger writes logrus lines with the fields; with() adds a task's", () => {
  const lines: string[] = [];
  const log = createLogger((l) => lines.push(l), { namespace: "k8s.io" }, false);
  log.info('say "hi"');
  log.with({ id: "c1", pod: "p1" }).warn("careful");
  log.with({ id: "c2", pod: undefined }).error("no pod");
  assert.equal(lines.length, 3);
  const [info, warn, error] = lines.map((l) => LINE.exec(l)!);
  assert.deepEqual([info[1], info[2], info[3]], ["info", 'say \\"hi\\"', ' namespace="k8s.io"']);
  assert.deepEqual([warn[1], warn[3]], ["warning", ' namespace="k8s.io" id="c1" pod="p1"']);
  assert.deepEqual([error[1], error[3]], ["error", ' namespace="k8s.io" id="c2"']);
});

Deno.test("createLogger writes debug lines only with -debug, in every derived logger", () => {
  const lines: string[] = [];
  const quiet = createLogger((l) => lines.push(l), {}, false);
  quiet.debug("hidden");
  quiet.with({ id: "c1" }).debug("hidden too");
  assert.equal(lines.length, 0);
  assert.equal(quiet.debugging, false);
  const shown: string[] = [];
  const loud = createLogger((l) => shown.push(l), {}, true);
  loud.with({ id: "c1" }).debug("shown");
  assert.equal(shown.length, 1);
  assert.match(shown[0], /level=debug msg="shown" id="c1"\n$/);
});
