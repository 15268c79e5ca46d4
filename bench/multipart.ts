/**
 * What splitting a multipart body costs, side by side in one run:
 *
 *   npx tsx bench/multipart.ts [--runs N]
 *
 * The agent's split (http/form-data.ts: Buffer.indexOf on the body read whole, files as views)
 * next to Node's own multipart parser (undici, behind Response.formData), on a click's body (the
 * portrait JPEG and its points, as bench/http.ts sends it) and on a batch of 10 images.
 * Both get the same bytes and give every part's bytes. Prints JSON medians in milliseconds and
 * the agent's over Node's per body; the machine is noisy, so compare the ratios of one run.
 */
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { multipartBoundary, splitFormData } from "../agent/src/http/form-data.ts";
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
  agent: async ({ body, contentType }: { body: Buffer; contentType: string }) => splitFormData(body, multipartBoundary(contentType), 100).map((p) => p.data),
  node: async ({ body, contentType }: { body: Buffer; contentType: string }) => (await undiciParts(body, contentType)).map((p) => p.data),
};

const result: Record<string, Record<string, number>> = {};
for (const [name, input] of Object.entries(bodies)) {
  const [ours, theirs] = [await parsers.agent(input), await parsers.node(input)];
  if (ours.length !== theirs.length || ours.some((part, i) => !part.equals(theirs[i]!))) throw new Error(`${name}: the two parsers disagree`);
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
console.log(JSON.stringify({ runs, ...result }, null, 2));
