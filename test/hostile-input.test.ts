import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { FastifyInstance } from "fastify";
import sharp from "sharp";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer } from "../agent/src/http/server.ts";
import type { SegmentEngine } from "../agent/src/segment/engine.ts";
import { DEFAULT_TRACE_LIMITS, encodeRle } from "../agent/src/segment/formats/index.ts";
import type { BinaryMask } from "../agent/src/segment/mask.ts";
import { postForm, request } from "./helpers/http.ts";

const exec = promisify(execFile);

/** A 1-bit PNG of a checkerboard: a few KB on the wire, an outline with a corner at every pixel. */
async function checkerboardPng(side: number): Promise<{ png: Buffer; mask: BinaryMask }> {
  const data = new Uint8Array(side * side);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) data[y * side + x] = (x + y) & 1;
  const png = await sharp(Buffer.from(data.map((v) => v * 255)), { raw: { width: side, height: side, channels: 1 } })
    .png({ palette: true, colours: 2, compressionLevel: 9 })
    .toBuffer();
  return { png, mask: { width: side, height: side, data } };
}

// The reproductions of issue 20, each against a real server: the answer names the limit, and
// the server (and the export of everything else) goes on.
describe("masks too complex to trace", () => {
  let app: FastifyInstance;
  let url: string;
  let dataset: string;
  let work: string;
  let board: { png: Buffer; mask: BinaryMask };
  let photo: Buffer;

  beforeAll(async () => {
    dataset = await mkdtemp(join(tmpdir(), "sam-edge-hostile-"));
    work = await mkdtemp(join(tmpdir(), "sam-edge-hostile-x-"));
    board = await checkerboardPng(4096);
    photo = await sharp({ create: { width: 4096, height: 4096, channels: 3, background: "#336699" } }).jpeg().toBuffer();
    ({ app, url } = await startServer({ engine: new Promise<SegmentEngine>(() => {}), datasetDir: dataset }));
  });
  afterAll(async () => {
    await app.close();
    await rm(dataset, { recursive: true, force: true });
    await rm(work, { recursive: true, force: true });
  });

  it("mask-to-polygon with a 4096x4096 checkerboard at tolerance 0 is a 422 MASK_TOO_COMPLEX naming the limits", async () => {
    expect(board.png.length).toBeLessThan(64 * 1024);
    const res = await postForm(`${url}/v1/labeling/mask-to-polygon`, { mask: board.png, tolerance: "0" });
    expect([res.status, res.body.error?.code]).toEqual([422, "MASK_TOO_COMPLEX"]);
    expect(res.body.error.message).toContain(String(DEFAULT_TRACE_LIMITS.maxVertices));
    // The server is alive and still traces a plain mask.
    const ok = await postForm(`${url}/v1/labeling/mask-to-polygon`, { rle: JSON.stringify(encodeRle({ width: 8, height: 8, data: new Uint8Array(64).fill(1) })), tolerance: "0" });
    expect([ok.status, ok.body.polygons.length]).toEqual([200, 1]);
  });

  it("an annotation with that mask is refused at the door, and nothing is stored", async () => {
    const res = await postForm(`${url}/v1/annotations`, { image: photo, mask: board.png, class: "board" });
    expect([res.status, res.body.error?.code]).toEqual([422, "MASK_TOO_COMPLEX"]);
    expect(await readdir(join(dataset, "annotations")).catch(() => [])).toEqual([]);
  });

  it("an export skips what cannot be exported (a mask an older agent accepted, a torn file), lists it in export-report.json, and exports the rest", async () => {
    const square = new Uint8Array(4096 * 4096);
    for (let y = 100; y < 300; y++) square.fill(1, y * 4096 + 100, y * 4096 + 300);
    const ok = await postForm(`${url}/v1/annotations`, { image: photo, mask: { bytes: await sharp(Buffer.from(square.map((v) => v * 255)), { raw: { width: 4096, height: 4096, channels: 1 } }).png().toBuffer(), filename: "m.png" }, class: "square" });
    expect(ok.status, JSON.stringify(ok.body)).toBe(201);
    // What the agent of 288e321 wrote for the checkerboard: a valid record whose mask no export can trace.
    const stored = JSON.parse(await readFile(join(dataset, "annotations", `${ok.body.id}.json`), "utf8"));
    const id = "20261207T000000000Z-deadbeef";
    await writeFile(join(dataset, "annotations", `${id}.json`), JSON.stringify({ ...stored, id, class: "board", rle: encodeRle(board.mask) }));
    await writeFile(join(dataset, "annotations", "20261207T000000001Z-torn0000.json"), '{"id": "20261207T0000');
    for (const format of ["coco", "yolo", "voc"]) {
      const res = await request(`${url}/v1/export?format=${format}`);
      expect(res.status).toBe(200);
      const dir = join(work, format);
      await mkdir(dir);
      await writeFile(join(dir, "x.tar.gz"), res.body as Buffer);
      await exec("tar", ["-xzf", "x.tar.gz"], { cwd: dir });
      const report = JSON.parse(await readFile(join(dir, "export-report.json"), "utf8"));
      expect(report.format).toBe(format);
      const skipped = report.skipped.map((s: { annotation: string }) => s.annotation).sort();
      // VOC paints masks into index images: no outline to trace, so the checkerboard goes in.
      if (format === "voc") expect([report.exported, skipped]).toEqual([2, ["annotations/20261207T000000001Z-torn0000.json"]]);
      else {
        expect([report.exported, skipped]).toEqual([1, [id, "annotations/20261207T000000001Z-torn0000.json"]]);
        expect(report.skipped.find((s: { annotation: string }) => s.annotation === id).reason).toMatch(/outline has more than/);
      }
      if (format === "coco") {
        const coco = JSON.parse(await readFile(join(dir, "annotations.json"), "utf8"));
        expect(coco.annotations).toHaveLength(1);
        expect(coco.annotations[0].bbox).toEqual([100, 100, 200, 200]);
      }
    }
    // And the server still answers.
    expect((await request(`${url}/healthz`)).status).toBe(200);
  }, 60_000);
});
