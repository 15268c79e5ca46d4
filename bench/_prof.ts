import { BUNDLED_MODEL_DIR } from "../agent/src/cli.ts";
import { startServer } from "../agent/src/http/server.ts";
import { SamModel } from "../agent/src/model/sam-model.ts";
import { SegmentEngine } from "../agent/src/segment/engine.ts";
const engine = new SegmentEngine(await SamModel.load(BUNDLED_MODEL_DIR));
const { url } = await startServer({ engine, token: "t" });
process.on("SIGTERM", () => process.exit(0));
console.log(url);
