import type { IClientOptions } from "mqtt";
import type { CameraConfig } from "../config/schema.ts";
import { FfmpegSource } from "./ffmpeg.ts";
import { FolderSource } from "./folder.ts";
import { MjpegSource } from "./mjpeg.ts";
import { MqttFrameSource } from "./mqtt-frames.ts";
import { SnapshotSource } from "./snapshot.ts";
import type { FrameSource } from "./source.ts";
import { WebcamSource } from "./webcam.ts";

/** The broker relayed frames come from unless a camera names its own `url`. */
export interface RelayBroker {
  url: string;
  client: IClientOptions;
}

/** The source a validated camera entry describes (the schema guarantees each type's keys). */
export function createSource(cam: CameraConfig, broker: RelayBroker): FrameSource {
  const common = { cameraId: cam.id, maxFrameBytes: cam.max_frame_bytes };
  const http = {
    ...common,
    url: cam.url!,
    timeoutMs: cam.timeout_ms!,
    ...(cam.headers ? { headers: cam.headers } : {}),
    ...(cam.username !== undefined ? { username: cam.username } : {}),
    ...(cam.password !== undefined ? { password: cam.password } : {}),
  };
  switch (cam.type) {
    case "folder":
      return new FolderSource({ cameraId: cam.id, dir: cam.dir!, intervalMs: cam.interval_ms!, loop: cam.loop! });
    case "mjpeg":
      return new MjpegSource(http);
    case "snapshot":
      return new SnapshotSource({ ...http, intervalMs: cam.interval_ms! });
    case "ffmpeg":
      return new FfmpegSource({ ...common, input: cam.input!, inputArgs: cam.input_args ?? [], ...(cam.fps ? { fps: cam.fps } : {}) });
    case "webcam":
      return new WebcamSource({ ...common, device: cam.device!, width: cam.width!, height: cam.height!, intervalMs: cam.interval_ms! });
    case "mqtt": {
      const client: IClientOptions = { ...broker.client };
      if (cam.username !== undefined) client.username = cam.username;
      if (cam.password !== undefined) client.password = cam.password;
      return new MqttFrameSource({ ...common, url: cam.url ?? broker.url, client, topic: cam.topic! });
    }
  }
}
