import type { Frame } from "../capture/source.ts";
import type { ResultMessage } from "../client/types.ts";
import type { CameraConfig } from "../config/schema.ts";
import type { SegmentationResult } from "../service/segmentation.ts";

/** A camera frame's result: the masks, and the message every transport sends (encoded once). */
export interface ResultEvent {
  frame: Frame;
  settings: CameraConfig;
  result: SegmentationResult;
  message: ResultMessage;
  /** The masks over the frame as a JPEG, drawn once whoever asks (the HTTP overlay route shares it). */
  overlay: () => Promise<Buffer>;
}

export type ResultListener = (event: ResultEvent) => Promise<void> | void;

/**
 * Where the features hear of results. Listeners run one after another in the order they
 * subscribed, each awaited: the MQTT results feature subscribes first, so a result is on disk
 * before --print shows it. A listener that throws stops the ones after it, and the scheduler
 * logs the error.
 */
export class ResultBus {
  private readonly listeners: ResultListener[] = [];

  on(listener: ResultListener): void {
    this.listeners.push(listener);
  }

  async emit(event: ResultEvent): Promise<void> {
    for (const listener of this.listeners) await listener(event);
  }
}
