import { readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Counter, Gauge, type Registry } from "prom-client";
import { setAsideCorrupt } from "../core/state-file.ts";
import { isSamEdgeError, SamEdgeError } from "../core/errors.ts";
import type { Logger } from "../core/log.ts";
import type { EngineSlot } from "./engine-slot.ts";
import type { SessionConfig } from "../model/sam-model.ts";
import { type Engine, type EngineLoader, InProcessEngine } from "./engine.ts";
import type { FetchPolicy } from "../model/fetch-policy.ts";
import { selfTest, type SelfTestReport } from "./self-test.ts";
import { describeSource, parseSource, stageModel, type StageLimits } from "../model/stage.ts";
import { jsonSyntaxProblem } from "../core/json.ts";

/** The last update, as GET /v1/model and the MQTT reply show it. */
export interface UpdateRecord {
  source: string;
  result: "swapped" | "refused";
  /** The model swapped in. */
  model?: string;
  error?: { code: string; message: string };
  self_test?: SelfTestReport;
  /** Requests that were running on the old model at the swap: they finished on it. */
  in_flight_at_swap?: number;
  started_at: string;
  finished_at: string;
}

export interface ModelStatus {
  model: { name: string; id: string; dir: string; source?: string; input_size: number; sha256?: Record<string, string> } | null;
  update: { running: string | null; last: UpdateRecord | null };
}

/**
 * `<state_dir>/active-model.json`: the model set the last update swapped in. `config_dir` is
 * model.dir at that time: an edited model.dir is a newer choice than the update, and wins.
 */
interface ActiveRecord {
  dir: string;
  name: string;
  source: string;
  config_dir: string;
  updated_at: string;
}

export interface UpdaterOptions {
  slot: EngineSlot;
  stateDir: string;
  /** model.dir from the config, recorded with each update. */
  configDir: string;
  session: SessionConfig;
  limits: StageLimits;
  /** What URL sources may be fetched (updates come from the network); model.update.allowed_hosts. */
  fetchPolicy: FetchPolicy;
  log: Logger;
  registry: Registry;
  /** How a model set is loaded (in a worker thread in the daemon); in this thread when unset. */
  load?: EngineLoader;
}

const ACTIVE_FILE = "active-model.json";
const MODELS_DIR = "models";

function errorBody(err: SamEdgeError): { code: string; message: string } {
  return { code: err.code, message: err.message };
}

/** The last update's record; a torn or hand-edited one is set aside (and reported) so the start goes on clean. */
async function readActiveRecord(file: string, log: Logger): Promise<ActiveRecord | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    log.warn(`model: ${file} is unreadable (${(err as Error).message}); starting on model.dir`);
    return undefined;
  }
  let problem: string | undefined;
  try {
    const r = JSON.parse(text) as Partial<ActiveRecord> | null;
    const fields = ["dir", "name", "source", "config_dir", "updated_at"] as const;
    if (r && typeof r === "object" && fields.every((f) => typeof r[f] === "string")) return r as ActiveRecord;
    problem = `it lacks one of ${fields.join(", ")}`;
  } catch (err) {
    problem = `it is ${jsonSyntaxProblem(err)}`;
  }
  const kept = await setAsideCorrupt(file);
  log.warn(`model: ${file} cannot be used: ${problem}; kept as ${kept}, starting on model.dir`);
  return undefined;
}

/**
 * Loads the model a start should serve: the last update's when model.dir is still what it was
 * then, else model.dir (the record of the update is then dropped: the config is the newer
 * choice). An updated model that no longer loads falls back to model.dir, so a box never
 * fails to start over an update.
 */
export async function loadStartModel(
  stateDir: string,
  configDir: string,
  session: SessionConfig,
  log: Logger,
  load: EngineLoader = InProcessEngine.load,
): Promise<Engine> {
  const file = join(stateDir, ACTIVE_FILE);
  const record = await readActiveRecord(file, log);
  if (record && record.config_dir === resolve(configDir)) {
    try {
      const model = await load(record.dir, session);
      log.info(`model: ${record.name} from the update of ${record.updated_at} (${record.source}), instead of model.dir ${configDir}`);
      return model;
    } catch (err) {
      log.error(`model: the updated model in ${record.dir} does not load (${(err as Error).message}); starting on model.dir ${configDir}`);
    }
  } else if (record) {
    log.info(`model: model.dir is ${configDir}, no longer ${record.config_dir} as at the update of ${record.updated_at}: the config wins over that update`);
    await rm(file, { force: true });
  }
  return load(configDir, session);
}

/**
 * Model updates: stage and verify a model set, load it, self-test it, swap it in. One at a
 * time; whatever fails, the engine serving now keeps serving, and the reason is returned,
 * logged and counted.
 */
export class ModelUpdater {
  private running: string | undefined;
  private last: UpdateRecord | undefined;
  private readonly updates: Counter<"result" | "code">;

  constructor(private readonly options: UpdaterOptions) {
    const registers = [options.registry];
    this.updates = new Counter({
      name: "sam_edge_model_updates_total",
      help: "Model updates, by result (swapped or refused) and the refusal's code",
      labelNames: ["result", "code"],
      registers,
    });
    const slot = options.slot;
    new Gauge({
      name: "sam_edge_model_info",
      help: "The model new requests run on (1), by name and id",
      labelNames: ["name", "id"],
      registers,
      collect() {
        this.reset();
        const engine = slot.engine;
        if (engine) this.set({ name: engine.model.manifest.name, id: engine.model.id }, 1);
      },
    });
  }

  private get load(): EngineLoader {
    return this.options.load ?? InProcessEngine.load;
  }

  private get modelsDir(): string {
    return join(this.options.stateDir, MODELS_DIR);
  }

  status(): ModelStatus {
    const model = this.options.slot.engine?.model;
    return {
      model: model
        ? {
            name: model.manifest.name,
            id: model.id,
            dir: model.dir,
            ...(model.manifest.source ? { source: model.manifest.source } : {}),
            input_size: model.manifest.inputSize,
            ...(model.manifest.sha256 ? { sha256: model.manifest.sha256 } : {}),
          }
        : null,
      update: { running: this.running ?? null, last: this.last ?? null },
    };
  }

  /** Resolves with the new status once the new model serves; throws a MODEL_UPDATE_* error when it was refused. */
  async update(sourceText: unknown): Promise<ModelStatus> {
    if (this.running) throw new SamEdgeError("MODEL_UPDATE_BUSY", `an update from ${this.running} is running; retry once GET /v1/model shows it finished`);
    const shown = typeof sourceText === "string" ? sourceText.slice(0, 200) : String(sourceText);
    this.running = shown;
    try {
      await this.apply(sourceText, shown);
    } finally {
      this.running = undefined;
    }
    return this.status();
  }

  private async apply(sourceText: unknown, shown: string): Promise<void> {
    const started = new Date();
    const { slot, log } = this.options;
    let staged: string | undefined;
    let engine: Engine | undefined;
    try {
      const source = parseSource(sourceText);
      log.info(`model update: staging ${describeSource(source)}`);
      staged = (await stageModel(source, this.modelsDir, this.options.limits, this.options.fetchPolicy)).dir;
      try {
        engine = await this.load(staged, this.options.session);
      } catch (err) {
        if (!isSamEdgeError(err)) throw err;
        throw new SamEdgeError("MODEL_UPDATE_INVALID", `the new model set does not load (${err.code}: ${err.message})`);
      }
      const model = engine.model;
      const report = await selfTest(engine);
      const previous = slot.engine?.model;
      await this.persist({ dir: staged, name: model.manifest.name, source: shown, config_dir: resolve(this.options.configDir), updated_at: new Date().toISOString() });
      const inFlight = slot.inUse;
      const drained = slot.swap(engine);
      const record = { source: shown, result: "swapped" as const, model: model.manifest.name, self_test: report, in_flight_at_swap: inFlight };
      this.finish({ ...record, started_at: started.toISOString(), finished_at: new Date().toISOString() });
      log.info(
        `model update: ${model.manifest.name} (${model.id}) passed the self-test (IoU ${report.ious.join(", ")}) and serves new requests` +
          (previous ? `; ${previous.manifest.name} is released once its ${inFlight} running requests end` : ""),
      );
      drained.then(
        () => previous && log.info(`model update: ${previous.manifest.name} released`),
        (err: Error) => log.warn(`model update: releasing ${previous?.manifest.name} failed: ${err.message}`),
      );
      await this.prune([staged, ...(previous ? [previous.dir] : [])]).catch((err: Error) => log.warn(`model update: removing older model sets from ${this.modelsDir} failed: ${err.message}`));
    } catch (err) {
      await engine?.release().catch((e: Error) => log.warn(`model update: releasing the refused model failed: ${e.message}`));
      if (staged) await rm(staged, { recursive: true, force: true });
      const refusal =
        isSamEdgeError(err) && err.code.startsWith("MODEL_UPDATE_") ? err : new SamEdgeError("MODEL_UPDATE_FAILED", `the update failed inside the agent: ${(err as Error).message}`);
      const serving = slot.engine?.model.manifest.name;
      this.finish({ source: shown, result: "refused", error: errorBody(refusal), started_at: started.toISOString(), finished_at: new Date().toISOString() });
      const detail = refusal.detail ? ` [${refusal.detail}]` : "";
      log.warn(`model update from ${shown} refused (${refusal.code}: ${refusal.message})${detail}; ${serving ? `still serving ${serving}` : "no model is loaded"}`);
      throw refusal;
    }
  }

  private finish(record: UpdateRecord): void {
    this.last = record;
    this.updates.inc({ result: record.result, code: record.error?.code ?? "" });
  }

  /** Written whole, then renamed: a crash leaves the old record or the new one, never half of one. */
  private async persist(record: ActiveRecord): Promise<void> {
    const file = join(this.options.stateDir, ACTIVE_FILE);
    await writeFile(`${file}.tmp`, JSON.stringify(record, null, 2));
    await rename(`${file}.tmp`, file);
  }

  /** Keeps the model serving now and the one before it (to go back to); removes older ones and leftovers of interrupted updates. */
  private async prune(keep: string[]): Promise<void> {
    const kept = new Set(keep.map((d) => resolve(d)));
    for (const entry of await readdir(this.modelsDir)) {
      const dir = join(this.modelsDir, entry);
      if (!kept.has(resolve(dir))) await rm(dir, { recursive: true, force: true });
    }
  }
}
