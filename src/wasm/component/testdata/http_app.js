// A wasi:http proxy for tests (built by build.sh with componentize-js).
//
//   /        the hello world text
//   /count   a module-global counter, incremented per request: always 1 when every
//            request gets a fresh instance
//   /echo    the request body, streamed back
//   /env     the REQUEST_ID environment variable
//   /trap    throws inside the handler
//   /exit    calls wasi:cli/exit with an error
//   /big?n=  n bytes ("a"…), streamed in 64 KiB chunks
//   /sleep?ms=  answers after ms milliseconds
//   /fetch?url= fetches url (wasi:http/outgoing-handler) and answers its status and body
import { getEnvironment } from "wasi:cli/environment@0.2.10";
import { exit } from "wasi:cli/exit@0.2.10";

const HELLO = "Hello, this is your first wasi:http/proxy world!\n";
const CHUNK = 64 * 1024;
let counter = 0;

function bigBody(n) {
  let left = n;
  const chunk = new Uint8Array(CHUNK).fill(0x61);
  return new ReadableStream({
    pull(controller) {
      if (left <= 0) {
        controller.close();
        return;
      }
      const size = Math.min(left, CHUNK);
      controller.enqueue(size === CHUNK ? chunk.slice() : chunk.slice(0, size));
      left -= size;
    },
  });
}

async function handle(request) {
  const url = new URL(request.url);
  switch (url.pathname) {
    case "/":
      return new Response(HELLO);
    case "/count":
      counter += 1;
      return new Response(String(counter));
    case "/echo":
      return new Response(request.body, {
        headers: {
          "content-type": request.headers.get("content-type") ?? "application/octet-stream",
        },
      });
    case "/env": {
      const env = new Map(getEnvironment());
      return new Response(env.get("REQUEST_ID") ?? "unset");
    }
    case "/trap":
      throw new Error("trap requested");
    case "/exit":
      exit({ tag: "err", val: undefined });
      return new Response("unreachable");
    case "/big":
      return new Response(bigBody(Number(url.searchParams.get("n") ?? 0)));
    case "/fetch": {
      const upstream = await fetch(url.searchParams.get("url"));
      return new Response(`${upstream.status} ${await upstream.text()}`);
    }
    case "/sleep":
      await new Promise((resolve) => setTimeout(resolve, Number(url.searchParams.get("ms") ?? 0)));
      return new Response("slept");
    default:
      return new Response("not found\n", { status: 404 });
  }
}

addEventListener("fetch", (event) => event.respondWith(handle(event.request)));
