/**
 * The model self-test's figures for any model folders: the IoU of each click's best mask and of
 * each box's mask with its circle (what SELF_TEST_MIN_IOU and SELF_TEST_MIN_BOX_IOU are set
 * against), or the self-test's refusal. Broken copies to compare with:
 * `python3 test/helpers/break_model.py models/tiny-sam /tmp/zero zero-encoder` (or shuffled-encoder).
 *
 *   npx tsx bench/self-test.ts [MODEL_DIR...]
 */
import { BUNDLED_MODEL_DIR } from "../agent/src/config/paths.ts";
import { InProcessEngine } from "../agent/src/service/engine.ts";
import { selfTest } from "../agent/src/service/self-test.ts";

const results = [];
for (const dir of process.argv.length > 2 ? process.argv.slice(2) : [BUNDLED_MODEL_DIR]) {
  const engine = await InProcessEngine.load(dir);
  try {
    results.push({ model: dir, ...(await selfTest(engine)) });
  } catch (err) {
    results.push({ model: dir, refused: (err as Error).message });
  } finally {
    await engine.release();
  }
}
console.log(JSON.stringify(results, null, 2));
