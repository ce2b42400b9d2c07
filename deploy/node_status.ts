/**
 * Sets a label on this pod's node through the Kubernetes API, as the DaemonSet's
 * service account (deploy/rbac.yaml: get and patch on nodes):
 *
 *   deno run --allow-net --allow-env --allow-read=<sa dir> node_status.ts KEY=VALUE
 *
 * A JSON merge patch of metadata.labels, over TLS checked against the service
 * account's CA (the reason this is not busybox's wget, which can neither PATCH nor
 * verify a certificate). NODE_NAME comes from the downward API (spec.nodeName).
 *
 * @module
 */

const SA = "/var/run/secrets/kubernetes.io/serviceaccount";

const [pair] = Deno.args;
const eq = pair?.indexOf("=") ?? -1;
if (eq <= 0) {
  console.error("node_status.ts: usage: node_status.ts KEY=VALUE");
  Deno.exit(2);
}
const node = Deno.env.get("NODE_NAME");
const host = Deno.env.get("KUBERNETES_SERVICE_HOST");
const port = Deno.env.get("KUBERNETES_SERVICE_PORT") ?? "443";
if (!node || !host) {
  console.error("node_status.ts: NODE_NAME and KUBERNETES_SERVICE_HOST must be set (in a pod)");
  Deno.exit(2);
}
const token = (await Deno.readTextFile(`${SA}/token`)).trim();
const client = Deno.createHttpClient({ caCerts: [await Deno.readTextFile(`${SA}/ca.crt`)] });
const hostPart = host.includes(":") ? `[${host}]` : host; // an IPv6 service address
const url = `https://${hostPart}:${port}/api/v1/nodes/${encodeURIComponent(node)}`;
const res = await fetch(url, {
  method: "PATCH",
  client,
  headers: {
    authorization: `Bearer ${token}`,
    "content-type": "application/merge-patch+json",
  },
  body: JSON.stringify({ metadata: { labels: { [pair.slice(0, eq)]: pair.slice(eq + 1) } } }),
});
const body = await res.text();
if (!res.ok) {
  console.error(
    `node_status.ts: PATCH ${url} answered ${res.status}: ${body.slice(0, 300)}` +
      (res.status === 403 ? " (is deploy/rbac.yaml applied?)" : ""),
  );
  Deno.exit(1);
}
console.log(`installer: labelled node ${node} ${pair}`);
