/**
 * A tiny authoritative DNS responder over UDP for end-to-end tests: it answers A queries
 * for the names it is given, an empty NOERROR for their other record types (AAAA), and
 * NXDOMAIN for every other name. The CRI pod test runs it inside a pod's network
 * namespace (`nsenter --net=<netns> deno run --unstable-net …`) and names it in the pod's
 * `dns_config`.
 *
 *     deno run --allow-net --unstable-net dns_responder.ts <ip>:<port> <name>=<ipv4>...
 *
 * Prints `listening` on stdout once it can be asked, then serves until killed.
 *
 * @module
 */

/** DNS wire values (RFC 1035). */
const DNS = {
  TYPE_A: 1,
  CLASS_IN: 1,
  /** Response, authoritative answer, recursion desired copied, no error. */
  FLAGS_ANSWER: 0x8400,
  RD: 0x0100,
  RCODE_NXDOMAIN: 3,
  HEADER_BYTES: 12,
  TTL: 5,
} as const;

/** The query's name (lower case), its type and where its question ends. */
export function parseQuestion(msg: Uint8Array): { name: string; type: number; end: number } {
  const labels: string[] = [];
  let at = DNS.HEADER_BYTES;
  while (msg[at] !== 0) {
    const len = msg[at];
    if (len === undefined || len > 63) throw new Error("malformed or compressed question name");
    labels.push(new TextDecoder().decode(msg.subarray(at + 1, at + 1 + len)));
    at += 1 + len;
  }
  at += 1;
  const view = new DataView(msg.buffer, msg.byteOffset);
  return { name: labels.join(".").toLowerCase(), type: view.getUint16(at), end: at + 4 };
}

/** The answer to `query` from `names` (name → IPv4 address). */
export function answer(query: Uint8Array, names: ReadonlyMap<string, string>): Uint8Array {
  const q = parseQuestion(query);
  const ip = names.get(q.name);
  const withA = ip !== undefined && q.type === DNS.TYPE_A;
  const out = new Uint8Array(q.end + (withA ? 16 : 0));
  out.set(query.subarray(0, q.end));
  const view = new DataView(out.buffer);
  const rd = view.getUint16(2) & DNS.RD;
  view.setUint16(2, DNS.FLAGS_ANSWER | rd | (ip === undefined ? DNS.RCODE_NXDOMAIN : 0));
  view.setUint16(4, 1); // one question
  view.setUint16(6, withA ? 1 : 0);
  view.setUint16(8, 0);
  view.setUint16(10, 0);
  if (withA) {
    let at = q.end;
    view.setUint16(at, 0xc000 | DNS.HEADER_BYTES); // the question's name
    view.setUint16(at + 2, DNS.TYPE_A);
    view.setUint16(at + 4, DNS.CLASS_IN);
    view.setUint32(at + 6, DNS.TTL);
    view.setUint16(at + 10, 4);
    at += 12;
    for (const octet of ip.split(".")) out[at++] = Number(octet);
  }
  return out;
}

if (import.meta.main) {
  const [addr, ...pairs] = Deno.args;
  const sep = addr?.lastIndexOf(":") ?? -1;
  if (sep < 0 || pairs.length === 0) {
    console.error("usage: dns_responder.ts <ip>:<port> <name>=<ipv4>...");
    Deno.exit(2);
  }
  const names = new Map(pairs.map((p) => {
    const [name, ip] = p.split("=");
    return [name.toLowerCase(), ip] as [string, string];
  }));
  const socket = Deno.listenDatagram({
    transport: "udp",
    hostname: addr.slice(0, sep),
    port: Number(addr.slice(sep + 1)),
  });
  console.log("listening");
  for await (const [msg, from] of socket) {
    try {
      await socket.send(answer(msg, names), from);
    } catch (err) {
      console.error(`dns_responder: ${(err as Error).message}`);
    }
  }
}
