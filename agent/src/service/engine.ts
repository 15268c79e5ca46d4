import type { ModelManifest } from "../model/manifest.ts";
import { SamModel, type SessionConfig } from "../model/sam-model.ts";
import { SegmentEngine, type SegmentOptions, type SegmentResult } from "../segment/engine.ts";
import { segmentEverything, type EverythingOptions, type EverythingResult } from "../segment/everything.ts";
import type { Prompt } from "../segment/prompts.ts";

/** What the service knows of the model an engine runs. */
export interface ModelInfo {
  manifest: ModelManifest;
  id: string;
  dir: string;
  /** Whether its decoder takes a batch of prompts (Everything mode batches its grid). */
  canBatch: boolean;
}

export interface CacheStats {
  entries: number;
  bytes: number;
  hits: number;
  misses: number;
}

/**
 * A model ready to segment, wherever it runs: in this thread (tests, benchmarks, the CLI's
 * one-off runs) or in a worker thread (the daemon, so that HTTP, MQTT and the watchdog stay
 * live while a model runs). The service sees only this.
 */
export interface Engine {
  readonly model: ModelInfo;
  readonly cacheStats: CacheStats;
  segment(image: Uint8Array, prompt: Prompt, options?: SegmentOptions): Promise<SegmentResult>;
  everything(image: Uint8Array, options?: Partial<EverythingOptions>): Promise<EverythingResult>;
  release(): Promise<void>;
}

export interface EngineLoader {
  (dir: string, session: SessionConfig): Promise<Engine>;
}

/** The model in this thread. */
export class InProcessEngine implements Engine {
  readonly model: ModelInfo;

  constructor(readonly engine: SegmentEngine) {
    const m = engine.model;
    this.model = { manifest: m.manifest, id: m.id, dir: m.dir, canBatch: m.canBatch };
  }

  static async load(dir: string, session?: SessionConfig): Promise<InProcessEngine> {
    return new InProcessEngine(new SegmentEngine(await SamModel.load(dir, session)));
  }

  get cacheStats(): CacheStats {
    return this.engine.cacheStats;
  }

  segment(image: Uint8Array, prompt: Prompt, options?: SegmentOptions): Promise<SegmentResult> {
    return this.engine.segment(image, prompt, options);
  }

  everything(image: Uint8Array, options?: Partial<EverythingOptions>): Promise<EverythingResult> {
    return segmentEverything(this.engine, image, options);
  }

  release(): Promise<void> {
    return this.engine.model.release();
  }
}
