/**
 * What splitting a multipart body costs, side by side in one run:
 *
 *   npx tsx bench/multipart.ts [--runs N]
 *
 * The agent's parse (http/multipart.ts: busboy on the body read whole) next to Node's own
 * multipart parser (undici, behind Response.formData), on a click's body (the portrait JPEG and
 * its points, as bench/http.ts sends it) and on a batch of 10 images, and a click itself (the
 * engine on the same JPEG, embedding cached as for a second click) to weigh the parse against.
 * Both parsers get the same bytes and give every part's bytes. Prints JSON medians in
 * milliseconds and the ratios; the machine is noisy, so compare the ratios of one run.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { FIELD_SIZE_LIMIT } from "../agent/src/http/limits.ts";
import { parseForm } from "../agent/src/http/multipart.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
import { TINY_SAM_DIR } from "../test/helpers/scenes.ts";
import { encodeForm, undiciParts } from "../test/helpers/form-data.ts";
import { median } from "./stats.ts";
import { wholeNumber } from "./options.ts";

const IMAGE = fileURLToPath(new URL("../test/fixtures/scenes/portrait.jpg", import.meta.url));
const BLOCKS = 10;
const { values } = parseArgs({ options: { runs: { type: "string", default: "200" } } });
const runs = wholeNumber("runs", values.runs, BLOCKS);

const image = new Uint8Array(await readFile(IMAGE));
async function encode(images: number): Promise<{ body: Buffer; contentType: string }> {
  const form = new FormData();
  for (let i = 0; i < images; i++) form.append("image", new Blob([image]), `frame-${i}.jpg`);
  form.append("points", JSON.stringify([{ x: 240, y: 320, label: 1 }]));
  return encodeForm(form);
}
const bodies = { click: await encode(1), batch_of_10: await encode(10) };

const parsers = {
  agent: async ({ body, contentType }: { body: Buffer; contentType: string }) =>
    Object.values(await parseForm(body, contentType, FIELD_SIZE_LIMIT)).flatMap((v) => (Array.isArray(v) ? v : [v]).map((x) => (Buffer.isBuffer(x) ? x : Buffer.from(x as string)))),
  node: async ({ body, contentType }: { body: Buffer; contentType: string }) => (await undiciParts(body, contentType)).map((p) => p.data),
};

const result: Record<string, Record<string, number>> = {};
for (const [name, input] of Object.entries(bodies)) {
  const [ours, theirs] = [await parsers.agent(input), await parsers.node(input)];
  const sorted = (parts: Buffer[]) => parts.map((p) => p.toString("base64")).sort();
  if (sorted(ours).join() !== sorted(theirs).join()) throw new Error(`${name}: the two parsers disagree`);
  const times: Record<string, number[]> = { agent: [], node: [] };
  for (let block = 0; block < BLOCKS; block++) {
    for (const [parser, parse] of Object.entries(parsers)) {
      for (let r = 0; r < runs / BLOCKS; r++) {
        const t = performance.now();
        await parse(input);
        times[parser]!.push(performance.now() - t);
      }
    }
  }
  const [agent, node] = [median(times.agent!), median(times.node!)];
  result[name] = { body_kb: Math.round(input.body.length / 1024), agent_ms: +agent.toFixed(4), node_ms: +node.toFixed(4), agent_over_node: +(agent / node).toFixed(3) };
}
// A click on the same image with its embedding cached: what the interactive route's engine call costs.
const model = await SamModel.load(TINY_SAM_DIR);
const engine = new SegmentEngine(model);
const click = { points: [{ x: 240, y: 320, label: 1 as const }] };
await engine.segment(image, click);
const clicks: number[] = [];
for (let r = 0; r < Math.max(20, runs / 10); r++) {
  const t = performance.now();
  await engine.segment(image, click, { bestOnly: true });
  clicks.push(performance.now() - t);
}
await model.release();
const clickMs = median(clicks);
console.log(JSON.stringify({ runs, ...result, click_ms: +clickMs.toFixed(3), agent_click_body_over_click: +(result.click!.agent_ms! / clickMs).toFixed(4) }, null, 2));
