import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { decodeRle, maskFromPng } from "../agent/src/segment/formats/index.ts";
import { maskIoU } from "../agent/src/segment/mask.ts";
import { loadScene, SCENES_DIR, type Scene, MIN_CLICK_IOU } from "./helpers/scenes.ts";

const BIN = fileURLToPath(new URL("../agent/bin/sam-edge.js", import.meta.url));
const exec = promisify(execFile);

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await exec("node", [BIN, ...args], { maxBuffer: 64 * 1024 * 1024 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe("sam-edge CLI", () => {
  let scene: Scene;
  let tmp: string;
  beforeAll(async () => {
    scene = await loadScene("landscape");
    tmp = await mkdtemp(join(tmpdir(), "sam-edge-cli-"));
  });
  afterAll(async () => rm(tmp, { recursive: true, force: true }));

  it("segment prints JSON whose masks are the clicked object, as PNG or as RLE", async () => {
    const obj = scene.objects[0]!;
    const image = join(SCENES_DIR, "landscape.png");
    const point = `--point=${obj.click[0]},${obj.click[1]},1`;
    const json = await cli(["segment", image, point]);
    expect(json.code, json.stderr).toBe(0);
    const out = JSON.parse(json.stdout);
    expect(out).toMatchObject({ width: 640, height: 480 });
    // The best candidate alone, as the HTTP API answers; --multimask prints all three.
    expect(out.masks).toHaveLength(1);
    const png = await maskFromPng(Buffer.from(out.masks[0].mask, "base64"));
    expect(maskIoU(png, scene.truth(obj.label))).toBeGreaterThan(MIN_CLICK_IOU);
    expect(out.masks[0].bbox).toHaveLength(4);

    const rle = JSON.parse((await cli(["segment", image, point, "--format", "rle"])).stdout);
    expect(maskIoU(decodeRle(rle.masks[0].rle), png)).toBe(1);
    const all = JSON.parse((await cli(["segment", image, point, "--multimask"])).stdout);
    expect(all.masks).toHaveLength(3);
    expect(all.masks[0].confidence).toBeGreaterThanOrEqual(all.masks[2].confidence);
  });

  it("segment --format png --out writes the best mask", async () => {
    const obj = scene.objects[1]!;
    const out = join(tmp, "mask.png");
    const r = await cli(["segment", join(SCENES_DIR, "landscape.png"), `--point=${obj.click[0]},${obj.click[1]}`, "--format", "png", "--out", out]);
    expect(r.code, r.stderr).toBe(0);
    const mask = await maskFromPng(await readFile(out));
    expect(maskIoU(mask, scene.truth(obj.label))).toBeGreaterThan(MIN_CLICK_IOU);
  });

  it.each([
    [["segment", "nope.jpg", "--point", "1,2"], 1, /IMAGE_NOT_FOUND: cannot read nope.jpg/],
    [["segment", "package.json", "--point", "1,2"], 1, /IMAGE_UNSUPPORTED/],
    [["segment", "IMG", "--point", "1,2,7"], 1, /label must be 1/],
    [["segment", "IMG", "--point", "a,b"], 1, /comma-separated numbers/],
    [["segment", "IMG", "--point", "5000,5"], 1, /outside the 640x480 image/],
    [["segment", "IMG", "--box", "10,10,5,5"], 1, /x1 > x0/],
    [["segment", "IMG", "--point", "1,2", "--format", "gif"], 1, /--format must be one of/],
    [["segment", "IMG", "--everything", "--points-per-side", "100"], 1, /points_per_side/],
    [["segment", "IMG", "--bogus"], 2, /Unknown option/],
    [["fly"], 2, /unknown command "fly"/],
  ])("%j exits %i with a message", async (args, code, message) => {
    const r = await cli(args.map((a) => (a === "IMG" ? join(SCENES_DIR, "landscape.png") : a)));
    expect(r.code).toBe(code);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /); // a message, not a stack trace
  });

  it("run --once segments every sample frame and prints a JSON line each", async () => {
    const frames = join(tmp, "frames");
    await exec("mkdir", ["-p", frames]);
    await writeFile(join(frames, "a.jpg"), await readFile(join(SCENES_DIR, "portrait.jpg")));
    await writeFile(join(frames, "b.png"), await readFile(join(SCENES_DIR, "small.png")));
    await writeFile(join(frames, "c.jpg"), Buffer.from("broken frame"));
    // No broker, no HTTP port: this checks the frames, not the daemon's outputs (test/daemon*.test.ts do).
    const r = await cli(["run", "--once", "--print", "--frames", frames, "--interval-ms", "0", "--set", "mqtt.enabled=false", "--set", "http.enabled=false", "--set", `state_dir=${join(tmp, "state")}`]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split("\n").map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.frame, l.width, l.height])).toEqual([
      [0, 480, 640],
      [1, 300, 200],
    ]);
    // The corrupt frame is reported and skipped, and the run goes on.
    expect(r.stderr).toMatch(/frame 2 skipped: IMAGE_UNSUPPORTED/);
  });
});
