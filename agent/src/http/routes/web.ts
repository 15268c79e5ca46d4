import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import type { FastifyPluginAsync } from "fastify";

const WEB_DIR = fileURLToPath(new URL("../../web/", import.meta.url));

/** The page may load and call nothing but this server: no CDN, no outside request of any kind. */
const CSP = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";

/** The page's TypeScript, bundled for the browser once, on first request. */
function compiler(): () => Promise<string> {
  let compiled: Promise<string> | undefined;
  return () =>
    (compiled ??= build({
      entryPoints: [`${WEB_DIR}app.ts`],
      bundle: true,
      write: false,
      format: "esm",
      platform: "browser",
      target: "es2022",
      logLevel: "silent",
    }).then((r) => r.outputFiles[0]!.text));
}

/** The click-to-segment page. */
export const webRoutes: FastifyPluginAsync = async (app) => {
  const script = compiler();
  app.get("/", { schema: { hide: true } }, async (_request, reply) =>
    reply.type("text/html; charset=utf-8").header("Content-Security-Policy", CSP).send(await readFile(`${WEB_DIR}index.html`)),
  );
  app.get("/app.js", { schema: { hide: true } }, async (_request, reply) => reply.type("text/javascript; charset=utf-8").send(await script()));
};
