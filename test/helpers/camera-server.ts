import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";

export interface CameraServerOptions {
  /** Frames served in turn, as an ESP32-CAM serves its sensor's. */
  frames: Buffer[];
  fps: number;
  /** When set, requests without exactly this Authorization header get a 401. */
  authorization?: string;
  /** Send each part's Content-Length (ESP32-CAM does); without it parts end at the boundary. */
  contentLength?: boolean;
}

/**
 * An ESP32-CAM stand-in over real HTTP: `/stream` is MJPEG (multipart/x-mixed-replace), as on
 * its port 81, and `/capture` one JPEG, as its snapshot URL.
 */
export class CameraServer {
  private server!: Server;
  private readonly streams = new Set<ServerResponse>();
  url = "";
  requests = 0;
  unauthorized = 0;
  private next = 0;

  constructor(private readonly options: CameraServerOptions) {}

  async start(port = 0): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server.listen(port, "127.0.0.1", resolve));
    const address = this.server.address();
    this.url = `http://127.0.0.1:${typeof address === "object" && address ? address.port : port}`;
    return this;
  }

  get port(): number {
    return Number(new URL(this.url).port);
  }

  private frame(): Buffer {
    const f = this.options.frames[this.next % this.options.frames.length]!;
    this.next++;
    return f;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.requests++;
    if (this.options.authorization && req.headers.authorization !== this.options.authorization) {
      this.unauthorized++;
      res.writeHead(401, { "WWW-Authenticate": 'Basic realm="cam"' }).end("unauthorized");
      return;
    }
    if (req.url === "/capture") {
      const jpeg = this.frame();
      res.writeHead(200, { "Content-Type": "image/jpeg", "Content-Length": jpeg.length }).end(jpeg);
      return;
    }
    if (req.url !== "/stream") {
      res.writeHead(404).end();
      return;
    }
    const boundary = "123456789000000000000987654321";
    res.writeHead(200, { "Content-Type": `multipart/x-mixed-replace;boundary=${boundary}` });
    this.streams.add(res);
    const timer = setInterval(() => {
      const jpeg = this.frame();
      const length = this.options.contentLength === false ? "" : `Content-Length: ${jpeg.length}\r\n`;
      res.write(`\r\n--${boundary}\r\nContent-Type: image/jpeg\r\n${length}\r\n`);
      res.write(jpeg);
    }, 1000 / this.options.fps);
    res.on("close", () => {
      clearInterval(timer);
      this.streams.delete(res);
    });
  }

  /** Drops every open stream, as a camera that reboots. */
  dropStreams(): void {
    for (const res of this.streams) res.destroy();
  }

  async close(): Promise<void> {
    this.dropStreams();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
