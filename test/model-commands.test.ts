import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { Registry } from "prom-client";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isSamEdgeError } from "../agent/src/core/errors.ts";
import { startServer } from "../agent/src/http/server.ts";
import { CATALOG_FILE, readCatalog } from "../agent/src/model/catalog.ts";
import { modelCommand } from "../agent/src/commands/model.ts";
import { DEFAULT_SESSION_CONFIG, SamModel } from "../agent/src/model/sam-model.ts";
import { ModelUpdater } from "../agent/src/service/model-updater.ts";
import { createLogger } from "../agent/src/core/log.ts";
import { EngineSlot } from "../agent/src/service/engine-slot.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { request } from "./helpers/http.ts";
import { LAYOUTS_DIR } from "./helpers/parity.ts";
import { TINY_SAM_DIR } from "./helpers/scenes.ts";

const REPO = new URL("../", import.meta.url).pathname;
const BIN = join(REPO, "agent/bin/sam-edge.js");
const INT8_DIR = join(REPO, "models/quantized/tiny-sam-int8");
const TOKEN = "model-commands-token";
const sha256 = async (path: string) => createHash("sha256").update(await readFile(path)).digest("hex");

/**
 * The publishers' files over real HTTP, as the hubs serve them: `/files/<path>` is
 * test/fixtures/layouts/<path> (and `/files/bundled/...` the bundled model), with Range requests
 * answered 206. Hostile answers: `/cut/...` sends half the file and drops the connection (the
 * first time only), `/html/...` an error page with status 200.
 * `/mirror/<name>/<path>` is a mirror: the catalog model <name>'s folder as pull lays it out.
 */
function hub(mirror: Record<string, string>, ranges: string[]): Promise<{ server: Server; url: string }> {
  const cut = new Set<string>();
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url!, "http://x").pathname);
    if (req.headers.range) ranges.push(`${path} ${req.headers.range}`);
    const [, kind, ...rest] = path.split("/");
    let file: string;
    if (kind === "mirror") {
      const [name, ...inner] = rest;
      file = join(mirror[name!] ?? "/nonexistent", ...inner);
    } else {
      file = rest[0] === "bundled" ? join(INT8_DIR, ...rest.slice(1)) : join(LAYOUTS_DIR, ...rest);
    }
    if (kind === "html") return res.writeHead(200, { "content-type": "text/html" }).end("<html><body>Repository not found</body></html>");
    let bytes: Buffer;
    try {
      bytes = await readFile(file);
    } catch {
      return res.writeHead(404).end("Entry not found");
    }
    if (kind === "cut" && !cut.has(path)) {
      cut.add(path);
      res.writeHead(200, { "content-length": String(bytes.length) });
      res.write(bytes.subarray(0, bytes.length >> 1));
      setTimeout(() => res.destroy(), 100);
      return;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? "");
    if (range) {
      const from = Number(range[1]);
      if (from >= bytes.length) return res.writeHead(416).end();
      res.writeHead(206, { "content-range": `bytes ${from}-${bytes.length - 1}/${bytes.length}`, "content-length": String(bytes.length - from) });
      return res.end(bytes.subarray(from));
    }
    res.writeHead(200, { "content-length": String(bytes.length) }).end(bytes);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}` })));
}

interface Entry {
  name: string;
  files: { path: string; url: string; bytes?: number | null; sha256?: string | null }[];
}

describe("sam-edge model: list, pull, add, info, use", () => {
  let tmp: string;
  let library: string;
  let catalog: string;
  let web: { server: Server; url: string };
  const lines: string[] = [];
  const log = (line: string) => lines.push(line);
  /** The Range requests the hub saw. */
  const ranges: string[] = [];

  /** Runs `sam-edge model ARGS` in process; resolves with its output lines, or rejects with its SamEdgeError. */
  const run = async (...args: string[]) => {
    lines.length = 0;
    await modelCommand(args, log);
    return lines.join("\n");
  };
  const codeOf = (args: string[]) => run(...args).then(() => "ok", (e) => (isSamEdgeError(e) ? e.code : `not a SamEdgeError: ${e}`));
  const pull = (name: string, ...more: string[]) => run("pull", name, "--catalog", catalog, "--library", library, ...more);

  beforeAll(async () => {
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-model-commands-"));
    library = join(tmp, "library");
    catalog = join(tmp, "catalog.json");
    web = await hub({ "tiny-sam-mirror": INT8_DIR, "edge-sam-mirror": join(LAYOUTS_DIR, "edge-sam") }, ranges);
    const u = (path: string) => `${web.url}/files/${path}`;
    const int8 = JSON.parse(await readFile(join(INT8_DIR, "manifest.json"), "utf8"));
    const entries: Entry[] = [
      // Each publisher's own layout, with no sha256 in the catalog: recorded on first pull.
      { name: "edge-sam", files: ["edge_sam_3x_encoder.onnx", "edge_sam_3x_decoder.onnx"].map((f) => ({ path: f, url: u(`edge-sam/${f}`) })) },
      { name: "efficient-sam-ti", files: ["encoder", "decoder"].map((p) => ({ path: `weights/efficient_sam_vitt_${p}.onnx`, url: u(`efficient-sam/weights/efficient_sam_vitt_${p}.onnx`) })) },
      { name: "sam2.1-samexporter", files: ["encoder", "decoder"].map((p) => ({ path: `sam2.1_hiera_t16.${p}.onnx`, url: u(`sam2-samexporter/output_models/sam2.1_hiera_t16.${p}.onnx`) })) },
      { name: "sam2.1-tiny", files: ["vision_encoder", "prompt_encoder_mask_decoder"].map((p) => ({ path: `onnx/${p}.onnx`, url: u(`hf-sam2/onnx/${p}.onnx`) })) },
      { name: "slimsam-int8", files: ["vision_encoder", "prompt_encoder_mask_decoder"].map((p) => ({ path: `onnx/${p}_quantized.onnx`, url: u(`hf-sam/onnx/${p}_quantized.onnx`) })) },
      { name: "sam-vit-quant", files: ["encoder", "decoder"].map((p) => ({ path: `sam_vit_t16.${p}.quant.onnx`, url: u(`sam-samexporter/output_models/sam_vit_t16.${p}.quant.onnx`) })) },
      { name: "mobile-sam", files: ["mobile_sam.encoder.onnx", "mobile_sam.onnx"].map((f) => ({ path: f, url: u(`mobile-sam/${f}`) })) },
      // The bundled model, with its published sha256: the one whose self-test passes.
      { name: "tiny-sam-mirror", files: [int8.encoder, int8.decoder].map((f: string) => ({ path: f, url: u(`bundled/${f}`), sha256: int8.sha256[f] })) },
      { name: "edge-sam-mirror", files: ["edge_sam_3x_encoder.onnx", "edge_sam_3x_decoder.onnx"].map((f) => ({ path: f, url: `https://huggingface.co/unreachable/${f}` })) },
      // Hostile or broken sources.
      { name: "cut", files: [{ path: "edge_sam_3x_encoder.onnx", url: `${web.url}/cut/edge-sam/edge_sam_3x_encoder.onnx` }, { path: "edge_sam_3x_decoder.onnx", url: u("edge-sam/edge_sam_3x_decoder.onnx") }] },
      { name: "wrong-sha", files: [{ path: "edge_sam_3x_encoder.onnx", url: u("edge-sam/edge_sam_3x_encoder.onnx"), sha256: "0".repeat(64) }, { path: "edge_sam_3x_decoder.onnx", url: u("edge-sam/edge_sam_3x_decoder.onnx") }] },
      { name: "html", files: [{ path: "edge_sam_3x_encoder.onnx", url: `${web.url}/html/edge-sam/edge_sam_3x_encoder.onnx` }, { path: "edge_sam_3x_decoder.onnx", url: u("edge-sam/edge_sam_3x_decoder.onnx") }] },
      { name: "gone", files: [{ path: "a.onnx", url: u("nothing/here.onnx") }, { path: "b.onnx", url: u("nothing/there.onnx") }] },
    ];
    const full = (e: Entry) => ({
      name: e.name,
      title: `test model ${e.name}`,
      publisher: "test fixtures",
      page: web.url,
      licence: "Apache-2.0",
      layout: "as published",
      suits: "tests",
      files: e.files.map((f) => ({ bytes: null, sha256: null, ...f })),
    });
    await writeFile(catalog, JSON.stringify({ models: entries.map(full) }));
  });

  afterAll(async () => {
    web?.server.closeAllConnections();
    await new Promise((r) => web?.server.close(r));
    await rm(tmp, { recursive: true, force: true });
  });

  it("the repository's catalog names real published files: https URLs, licences, layouts, which box each suits", async () => {
    const entries = await readCatalog(CATALOG_FILE);
    expect(entries.map((e) => e.name)).toEqual(expect.arrayContaining(["sam2.1-tiny", "sam2.1-small", "slimsam-77", "sam-vit-base", "edge-sam-3x", "efficient-sam-ti"]));
    for (const e of entries) {
      expect(e.files.every((f) => f.url.startsWith("https://")), e.name).toBe(true);
      expect(e.licence.length).toBeGreaterThan(0);
      expect(e.suits.length).toBeGreaterThan(0);
    }
    const out = await run("list");
    expect(out).toMatch(/sam2\.1-tiny: SAM 2\.1 Hiera-Tiny/);
    expect(out).toContain("onnx/vision_encoder.onnx <- https://huggingface.co/onnx-community/sam2.1-hiera-tiny-ONNX/resolve/main/onnx/vision_encoder.onnx");
    expect(out).toMatch(/edge-sam-3x: .*\n\s+publisher: .*\n\s+licence: S-Lab License 1\.0/);
  });

  const layouts: [string, string, string[]][] = [
    ["edge-sam", "sam", ["edge_sam_3x_encoder.onnx", "edge_sam_3x_decoder.onnx"]],
    ["efficient-sam-ti", "efficient-sam", ["weights/efficient_sam_vitt_encoder.onnx", "weights/efficient_sam_vitt_decoder.onnx"]],
    ["sam2.1-samexporter", "sam2", ["sam2.1_hiera_t16.encoder.onnx", "sam2.1_hiera_t16.decoder.onnx"]],
    ["sam2.1-tiny", "sam2", ["onnx/vision_encoder.onnx", "onnx/prompt_encoder_mask_decoder.onnx"]],
    ["slimsam-int8", "hf-sam", ["onnx/vision_encoder_quantized.onnx", "onnx/prompt_encoder_mask_decoder_quantized.onnx"]],
    ["sam-vit-quant", "sam", ["sam_vit_t16.encoder.quant.onnx", "sam_vit_t16.decoder.quant.onnx"]],
    ["mobile-sam", "sam", ["mobile_sam.encoder.onnx", "mobile_sam.onnx"]],
  ];
  for (const [name, family, files] of layouts) {
    it(`pulls ${name} in its publisher's layout, records each sha256 on first use and writes a manifest that loads`, { timeout: 60_000 }, async () => {
      // Random weights: their masks mean nothing, so the self-test (which wants real masks) is skipped.
      const out = await pull(name, "--no-self-test");
      expect(out).toContain(`${name}: the catalog gives no sha256 for these files; recorded on first use in its manifest:`);
      const dir = join(library, name);
      const manifest = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8"));
      expect([manifest.encoder, manifest.decoder]).toEqual(files);
      for (const f of files) {
        expect(manifest.sha256[f]).toBe(await sha256(join(dir, f)));
        expect(out).toContain(`${f} ${manifest.sha256[f]}`);
      }
      expect(manifest.source).toContain(`test model ${name}`);
      const model = await SamModel.load(dir);
      try {
        expect(model.layout.family).toBe(family);
      } finally {
        await model.release();
      }
      expect((await readdir(library)).filter((e) => e.startsWith("."))).toEqual([]);
    });
  }

  it("pulls a model with published sha256s, self-tests it, and `use` switches a running agent to it", { timeout: 120_000 }, async () => {
    const out = await pull("tiny-sam-mirror");
    expect(out).toMatch(/tiny-sam-mirror: self-test passed \(IoU [\d.]+, [\d.]+/);
    expect(out).not.toContain("recorded on first use");

    const stateDir = join(tmp, "state");
    const slot = new EngineSlot(new SegmentEngine(await SamModel.load(TINY_SAM_DIR)));
    const updater = new ModelUpdater({
      slot,
      stateDir,
      configDir: TINY_SAM_DIR,
      session: DEFAULT_SESSION_CONFIG,
      limits: { maxBytes: 64 * 1024 * 1024, timeoutMs: 30_000 },
      fetchPolicy: { allowedHosts: ["127.0.0.1"] },
      log: createLogger("error"),
      registry: new Registry(),
    });
    let app: FastifyInstance | undefined;
    try {
      const started = await startServer({ engine: slot, token: TOKEN, registry: new Registry(), models: { updater, allowUpdates: true } });
      app = started.app;
      const used = await run("use", "tiny-sam-mirror", "--library", library, "--url", started.url, "--token", TOKEN);
      expect(used).toMatch(new RegExp(`now serves tiny-sam-mirror from ${join(library, "tiny-sam-mirror")} \\(self-test IoU [\\d.]+, [\\d.]+\\)`));
      const status = (await request(`${started.url}/v1/model`, { token: TOKEN })).body;
      expect(status.model.name).toBe("tiny-sam-mirror");
      expect(status.update.last.result).toBe("swapped");
      // A wrong token is the agent's refusal, passed on with its code.
      expect(await codeOf(["use", "tiny-sam-mirror", "--library", library, "--url", started.url, "--token", "wrong"])).toBe("MODEL_UPDATE_FAILED");
    } finally {
      await app?.close();
      await slot.close();
    }
    // No agent at all: said so, with what to do.
    await expect(run("use", "tiny-sam-mirror", "--library", library, "--url", "http://127.0.0.1:9", "--token", TOKEN)).rejects.toThrow(/no agent answers at http:\/\/127\.0\.0\.1:9/);
  });

  it("pulls from a mirror (--base-url): <base>/<name>/<path> instead of the publisher's URL", { timeout: 60_000 }, async () => {
    const out = await pull("edge-sam-mirror", "--no-self-test", "--base-url", `${web.url}/mirror/`);
    expect(out).toContain("edge-sam-mirror: ");
    expect(JSON.parse(await readFile(join(library, "edge-sam-mirror", "manifest.json"), "utf8")).sha256["edge_sam_3x_encoder.onnx"]).toBe(
      await sha256(join(LAYOUTS_DIR, "edge-sam/edge_sam_3x_encoder.onnx")),
    );
    // An offline folder laid out the same way serves as well as a web mirror.
    const offline = join(tmp, "offline");
    await cp(join(LAYOUTS_DIR, "edge-sam"), join(offline, "edge-sam-mirror"), { recursive: true });
    await rm(join(library, "edge-sam-mirror"), { recursive: true });
    await pull("edge-sam-mirror", "--no-self-test", "--base-url", offline);
    expect(await stat(join(library, "edge-sam-mirror", "manifest.json"))).toBeTruthy();
  });

  it("a download that breaks off leaves no model; pull again resumes where it stopped", { timeout: 60_000 }, async () => {
    await expect(pull("cut", "--no-self-test")).rejects.toThrow(/cut\/edge_sam_3x_encoder\.onnx: the download (broke off|ended) at/);
    expect(await readdir(library)).not.toContain("cut");
    const half = (await stat(join(LAYOUTS_DIR, "edge-sam/edge_sam_3x_encoder.onnx"))).size >> 1;
    const again = await pull("cut", "--no-self-test");
    expect(ranges).toContain(`/cut/edge-sam/edge_sam_3x_encoder.onnx bytes=${half}-`);
    expect(again).toContain("edge_sam_3x_encoder.onnx");
    const manifest = JSON.parse(await readFile(join(library, "cut", "manifest.json"), "utf8"));
    expect(manifest.sha256["edge_sam_3x_encoder.onnx"]).toBe(await sha256(join(LAYOUTS_DIR, "edge-sam/edge_sam_3x_encoder.onnx")));
  });

  it("refuses a file whose sha256 is not the catalog's, an error page served as a model, and a file that is not there; nothing is left", { timeout: 60_000 }, async () => {
    await expect(pull("wrong-sha", "--no-self-test")).rejects.toThrow(/edge_sam_3x_encoder\.onnx: sha256 is [0-9a-f]{64}, but the catalog says 0{64}/);
    expect(await codeOf(["pull", "html", "--catalog", catalog, "--library", library, "--no-self-test"])).toBe("MODEL_UPDATE_INVALID");
    await expect(pull("html", "--no-self-test")).rejects.toThrow(/html\/edge_sam_3x_encoder\.onnx: is not an ONNX model/);
    await expect(pull("gone", "--no-self-test")).rejects.toThrow(/answered 404/);
    const left = await readdir(library);
    for (const name of ["wrong-sha", "html", ".wrong-sha.partial", ".html.partial"]) expect(left).not.toContain(name);
  });

  it("refuses hostile names: in the command, and in a catalog", async () => {
    for (const name of ["../escape", "..", "a/b", ".hidden"]) {
      expect(await codeOf(["pull", name, "--catalog", catalog, "--library", library]), name).toBe("CONFIG_INVALID");
    }
    const bad = join(tmp, "bad-catalog.json");
    const entry = { title: "t", publisher: "p", page: "x", licence: "l", layout: "l", suits: "s" };
    await writeFile(bad, JSON.stringify({ models: [{ ...entry, name: "..", files: [] }] }));
    await expect(run("list", "--catalog", bad)).rejects.toThrow(/"name" must be one folder name/);
    const file = (path: string, url = "https://example.com/x.onnx") => ({ path, url, bytes: null, sha256: null });
    await writeFile(bad, JSON.stringify({ models: [{ ...entry, name: "ok", files: [file("../../x.onnx"), file("d.onnx")] }] }));
    await expect(run("list", "--catalog", bad)).rejects.toThrow(/"path" must be a relative path inside the model folder/);
    await writeFile(bad, JSON.stringify({ models: [{ ...entry, name: "ok", files: [file("e.onnx", "file:///etc/passwd"), file("d.onnx")] }] }));
    await expect(run("list", "--catalog", bad)).rejects.toThrow(/"url" must be http\(s\)/);
    expect(await codeOf(["pull", "no-such-model", "--catalog", catalog, "--library", library])).toBe("MODEL_NOT_FOUND");
  });

  it("add writes a manifest with each file's sha256 for any export, and refuses what it cannot", { timeout: 60_000 }, async () => {
    const edge = join(tmp, "add-edge");
    await cp(join(LAYOUTS_DIR, "edge-sam"), edge, { recursive: true });
    expect(await run("add", edge)).toMatch(/manifest\.json: edge_sam_3x, SAM image encoder .* \+ SAM mask decoder \(no mask input, low-res masks only\)/);
    const manifest = JSON.parse(await readFile(join(edge, "manifest.json"), "utf8"));
    expect(manifest.sha256["edge_sam_3x_decoder.onnx"]).toBe(await sha256(join(edge, "edge_sam_3x_decoder.onnx")));
    expect(await codeOf(["add", edge])).toBe("CONFIG_INVALID"); // a manifest is there: --force to rewrite it
    expect(await codeOf(["add", edge, "--force"])).toBe("ok");

    // samexporter's output_models/ with two models: one is copied out with --out.
    const several = join(LAYOUTS_DIR, "sam-samexporter/output_models");
    await expect(run("add", several)).rejects.toThrow(/holds 2 models: sam_vit_t16 .*, sam_vit_t16\.quant/);
    await expect(run("add", `${several}#sam_vit_t16.quant`)).rejects.toThrow(/add --out DIR/);
    const out = join(tmp, "add-quant");
    await run("add", `${several}#sam_vit_t16.quant`, "--out", out);
    const copied = JSON.parse(await readFile(join(out, "manifest.json"), "utf8"));
    expect([copied.encoder, copied.decoder]).toEqual(["sam_vit_t16.encoder.quant.onnx", "sam_vit_t16.decoder.quant.onnx"]);

    // Two files named by hand, whatever their names: roles by signature.
    const loose = join(tmp, "loose");
    await mkdir(loose);
    await cp(join(LAYOUTS_DIR, "mobile-sam/mobile_sam.onnx"), join(loose, "b.onnx"));
    await cp(join(LAYOUTS_DIR, "mobile-sam/mobile_sam.encoder.onnx"), join(loose, "a.onnx"));
    await run("add", join(loose, "b.onnx"), join(loose, "a.onnx"));
    const named = JSON.parse(await readFile(join(loose, "manifest.json"), "utf8"));
    expect([named.name, named.encoder, named.decoder]).toEqual(["loose", "a.onnx", "b.onnx"]);
    await expect(run("add", join(loose, "a.onnx"), join(edge, "edge_sam_3x_decoder.onnx"))).rejects.toThrow(/both files must be in one folder/);
    await expect(run("add", join(loose, "a.onnx"), join(loose, "a.onnx"), "--force")).rejects.toThrow(/needs an encoder and a decoder; found a\.onnx: SAM image encoder/);

    const empty = join(tmp, "empty");
    await mkdir(empty);
    expect(await codeOf(["add", empty])).toBe("MODEL_NOT_FOUND");
    const junk = join(tmp, "junk");
    await mkdir(junk);
    await writeFile(join(junk, "model.encoder.onnx"), "<html>not a model</html>");
    await writeFile(join(junk, "model.decoder.onnx"), Buffer.alloc(0));
    await expect(run("add", junk)).rejects.toThrow(/model\.decoder\.onnx: is not an ONNX model: the file is empty; model\.encoder\.onnx: is not an ONNX model/);
  });

  it("the sam-edge command runs them: output on stdout, exit 0; a refusal on stderr, exit 1", { timeout: 60_000 }, async () => {
    const exec = promisify(execFile);
    const listed = await exec(process.execPath, [BIN, "model", "list", "--catalog", catalog]);
    expect(listed.stdout).toMatch(/^edge-sam: test model edge-sam$/m);
    const refused = await exec(process.execPath, [BIN, "model", "pull", "../escape", "--catalog", catalog, "--library", library]).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/^sam-edge: CONFIG_INVALID: "\.\.\/escape" is not a model name/);
    const usage = await exec(process.execPath, [BIN, "fly"]).catch((e: { stderr: string }) => e);
    expect(usage.stderr).toContain("sam-edge model pull NAME");
  });

  it("info gives the layout, inputs and outputs, sizes and the milliseconds measured here", { timeout: 60_000 }, async () => {
    const out = await run("info", join(LAYOUTS_DIR, "hf-sam2") + "#fp32", "--runs", "1", "--json");
    const info = JSON.parse(out);
    expect(info.layout.family).toBe("sam2");
    expect(info.input).toEqual({ fit: "stretch", size: 1024 });
    expect(Object.keys(info.files)).toEqual(["onnx/vision_encoder.onnx", "onnx/prompt_encoder_mask_decoder.onnx"]);
    expect(info.graphs["onnx/prompt_encoder_mask_decoder.onnx"].inputs.map((i: { name: string }) => i.name)).toContain("image_embeddings.0");
    expect(info.encoder_ms).toBeGreaterThan(0);
    expect(info.decoder_ms).toBeGreaterThan(0);
    expect(await run("info", TINY_SAM_DIR, "--runs", "1")).toMatch(/tiny-sam \(.*\)\n\s+encoder: SAM image encoder[\s\S]*on this box: encoder [\d.]+ ms, decoder [\d.]+ ms/);
  });
});
