import assert from "node:assert/strict";
import { answer, parseQuestion } from "./dns_responder.ts";

/** A query as glibc's resolver sends it: id, RD set, one question. */
function query(name: string, type: number): Uint8Array {
  const labels = name.split(".").flatMap((l) => [l.length, ...new TextEncoder().encode(l)]);
  const out = new Uint8Array(12 + labels.length + 1 + 4);
  out.set([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  out.set(labels, 12);
  const view = new DataView(out.buffer);
  view.setUint16(12 + labels.length + 1, type);
  view.setUint16(12 + labels.length + 3, 1);
  return out;
}

const names = new Map([["dns-backend.test", "10.88.7.1"]]);

Deno.test("dns_responder: an A query for a known name gets its address", () => {
  const q = query("DNS-Backend.test", 1);
  const a = answer(q, names);
  const view = new DataView(a.buffer);
  assert.equal(view.getUint16(0), 0x1234, "the query's id");
  assert.equal(view.getUint16(2), 0x8500, "response, authoritative, RD, NOERROR");
  assert.deepEqual([view.getUint16(4), view.getUint16(6)], [1, 1]);
  assert.equal(parseQuestion(a).name, "dns-backend.test");
  assert.deepEqual([...a.subarray(a.length - 4)], [10, 88, 7, 1]);
  assert.equal(view.getUint16(a.length - 6), 4, "rdlength");
});

Deno.test("dns_responder: AAAA of a known name is empty, an unknown name NXDOMAIN", () => {
  const aaaa = new DataView(answer(query("dns-backend.test", 28), names).buffer);
  assert.equal(aaaa.getUint16(2) & 0xf, 0);
  assert.equal(aaaa.getUint16(6), 0, "no answers");
  const other = new DataView(answer(query("elsewhere.test", 1), names).buffer);
  assert.equal(other.getUint16(2) & 0xf, 3, "NXDOMAIN");
  assert.equal(other.getUint16(6), 0);
});
