import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { FastifyInstance } from "fastify";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { decodeRle } from "../agent/src/segment/formats/index.ts";
import { maskIoU, type BinaryMask } from "../agent/src/segment/mask.ts";
import { FixtureCameras } from "./helpers/http.ts";
import { loadScene, TINY_SAM_DIR, type Scene, MIN_CLICK_IOU } from "./helpers/scenes.ts";

const exec = promisify(execFile);
const TOKEN = "web-token";
/** Debian's chromium package; CHROMIUM overrides it. */
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = fileURLToPath(new URL("../test-results/web/", import.meta.url));
const COCO_HELPER = fileURLToPath(new URL("./helpers/coco_export.py", import.meta.url));

// The page end to end in headless Chromium: a real browser loads it from a real server, clicks
// inside a shape of a camera's frame, and the mask the page paints is compared with the scene's
// ground truth; accepting it must put it in the COCO export.
describe("the web page", () => {
  let model: SamModel;
  let app: FastifyInstance;
  let url: string;
  let browser: Browser;
  let page: Page;
  let scene: Scene;
  let dataset: string;
  const outside: string[] = [];

  /** The page's overlay as a mask: every pixel it painted. */
  async function overlayMask(): Promise<BinaryMask> {
    const { width, height, data } = await page.evaluate(() => {
      const canvas = document.getElementById("overlay") as HTMLCanvasElement;
      const pixels = canvas.getContext("2d")!.getImageData(0, 0, canvas.width, canvas.height).data;
      const set: number[] = [];
      for (let i = 3; i < pixels.length; i += 4) set.push(pixels[i]! > 0 ? 1 : 0);
      return { width: canvas.width, height: canvas.height, data: set };
    });
    return { width, height, data: Uint8Array.from(data) };
  }

  async function draws(): Promise<number> {
    return Number(await page.locator("#overlay").getAttribute("data-draws"));
  }

  async function clickImage(x: number, y: number, options: { modifiers?: "Shift"[]; button?: "right" } = {}): Promise<void> {
    const before = await draws();
    const box = (await page.locator("#points").boundingBox())!;
    await page.locator("#points").click({ position: { x: (x * box.width) / scene.width, y: (y * box.height) / scene.height }, ...options });
    await page.waitForFunction((n) => Number(document.getElementById("overlay")!.dataset.draws) > n, before);
  }

  beforeAll(async () => {
    model = await SamModel.load(TINY_SAM_DIR);
    scene = await loadScene("portrait");
    dataset = await mkdtemp(join(tmpdir(), "sam-edge-web-"));
    ({ app, url } = await startServer({ engine: new SegmentEngine(model), token: TOKEN, datasetDir: dataset, cameras: new FixtureCameras({ door: scene.bytes }) }));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    page.on("request", (r) => {
      if (!r.url().startsWith(url) && !/^(data|blob):/.test(r.url())) outside.push(r.url());
    });
    await page.goto(`${url}/#token=${TOKEN}`);
    await page.waitForFunction(() => document.getElementById("status")!.textContent!.includes("click an object"));
  });
  afterAll(async () => {
    await browser?.close();
    await app.close();
    await model.release();
    await rm(dataset, { recursive: true, force: true });
  });

  it("opens on the camera's latest frame, upright and at full size", async () => {
    expect(await page.locator("#camera").inputValue()).toBe("door");
    const size = await page.evaluate(() => {
      const c = document.getElementById("image") as HTMLCanvasElement;
      return [c.width, c.height];
    });
    expect(size).toEqual([scene.width, scene.height]);
  });

  it("a click inside a shape paints that shape's mask; a background click and undo come back to it", async () => {
    const obj = scene.objects.reduce((a, b) => (a.area > b.area ? a : b));
    await clickImage(obj.click[0], obj.click[1]);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "click-to-segment.png") });
    const first = await overlayMask();
    expect(await page.locator("#accept").isDisabled()).toBe(false);

    await clickImage(5, 5, { modifiers: ["Shift"] });
    expect(await page.evaluate(() => document.getElementById("status")!.dataset.state)).toBe("idle");
    const undo = await draws();
    await page.locator("#undo").click();
    await page.waitForFunction((n) => Number(document.getElementById("overlay")!.dataset.draws) > n, undo);
    expect((await overlayMask()).data).toEqual(first.data);

    expect(maskIoU(first, scene.truth(obj.label)), "IoU of the painted mask with the clicked shape").toBeGreaterThanOrEqual(MIN_CLICK_IOU);
  });

  it("accepting saves the mask as an annotation that the COCO export contains", async () => {
    const painted = await overlayMask();
    await page.locator("#class").fill("big circle");
    await page.locator("#accept").click();
    await page.waitForFunction(() => document.getElementById("status")!.textContent!.startsWith("saved big circle"));

    const res = await fetch(`${url}/v1/export?format=coco`, { headers: { Authorization: `Bearer ${TOKEN}` } });
    const dir = join(dataset, "export");
    await mkdir(dir);
    await writeFile(join(dir, "coco.tar.gz"), Buffer.from(await res.arrayBuffer()));
    await exec("tar", ["-xzf", "coco.tar.gz"], { cwd: dir });
    const { stdout } = await exec("python3", [COCO_HELPER, dir]);
    const coco = JSON.parse(stdout) as { annotations: { category: string; rle: { size: [number, number]; counts: string } }[] };
    expect(coco.annotations.map((a) => a.category)).toEqual(["big circle"]);
    expect(decodeRle(coco.annotations[0]!.rle).data).toEqual(painted.data);
  });

  it("Everything paints every mask it finds, and the page loaded nothing from outside", async () => {
    await page.locator("#per-side").fill("4");
    await page.locator("#everything").click();
    await page.waitForFunction(() => /^\d+ objects/.test(document.getElementById("status")!.textContent!), undefined, { timeout: 120_000 });
    const status = await page.locator("#status").textContent();
    const count = Number(/^(\d+) objects/.exec(status ?? "")?.[1]);
    expect(await page.locator("#overlay").getAttribute("data-masks")).toBe(String(count));
    expect(outside).toEqual([]);
  }, 150_000);
});
