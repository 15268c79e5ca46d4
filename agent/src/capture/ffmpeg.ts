import { spawn } from "node:child_process";
import { reconnecting, SourceState } from "./health.ts";
import { JpegSplitter } from "./jpeg-stream.ts";
import type { Frame, FrameSource, SourceHealth } from "./source.ts";

export interface FfmpegOptions {
  cameraId: string;
  /** Anything ffmpeg reads: /dev/video0, rtsp://..., a file, a lavfi graph. */
  input: string;
  /** Placed before `-i`: the input's format and options (`-f v4l2`, `-rtsp_transport tcp`, `-re`). */
  inputArgs: string[];
  /** Frames per second ffmpeg emits; unset keeps the input's rate. */
  fps?: number;
  maxFrameBytes: number;
  /** The ffmpeg binary; `ffmpeg` on PATH unless set. */
  bin?: string;
}

/** Any input ffmpeg reads, re-encoded to MJPEG on a pipe and cut into frames. */
export class FfmpegSource implements FrameSource {
  readonly cameraId: string;
  readonly live = true;
  private readonly state = new SourceState();
  private seq = 0;

  constructor(private readonly options: FfmpegOptions) {
    this.cameraId = options.cameraId;
  }

  health(): SourceHealth {
    return this.state.snapshot();
  }

  frames(signal: AbortSignal): AsyncIterable<Frame> {
    return reconnecting(this.state, signal, (s) => this.run(s));
  }

  private async *run(signal: AbortSignal): AsyncIterable<Frame> {
    const o = this.options;
    const args = ["-hide_banner", "-loglevel", "error", "-nostdin", ...o.inputArgs, "-i", o.input, ...(o.fps ? ["-vf", `fps=${o.fps}`] : []), "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "4", "pipe:1"];
    const child = spawn(o.bin ?? "ffmpeg", args, { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-2000)));
    const exited = new Promise<string>((resolve) => {
      child.once("error", (err) => resolve(`cannot start ffmpeg: ${err.message}`));
      child.once("close", (code, sig) => resolve(`ffmpeg exited (${sig ?? `code ${code}`})${stderr ? `: ${stderr.trim().split("\n").pop()}` : ""}`));
    });
    const stop = () => child.kill("SIGTERM");
    signal.addEventListener("abort", stop, { once: true });
    const splitter = new JpegSplitter(o.maxFrameBytes);
    let dropped = 0;
    try {
      this.state.connected = true;
      // Aborting kills ffmpeg, which ends its stdout and so this loop.
      for await (const chunk of child.stdout as AsyncIterable<Buffer>) {
        const frames = splitter.push(chunk);
        this.state.badFrames += splitter.dropped - dropped;
        dropped = splitter.dropped;
        for (const bytes of frames) yield { cameraId: this.cameraId, seq: this.seq++, capturedAt: new Date(), bytes };
      }
    } finally {
      signal.removeEventListener("abort", stop);
      if (child.exitCode === null && child.signalCode === null) stop();
    }
    throw new Error(await exited);
  }
}
