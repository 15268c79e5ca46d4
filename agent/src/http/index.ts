/** The local HTTP API, for the daemon to start: `startServer({ engine, token, cameras, datasetDir })`. */
export { createServer, DEFAULT_HOST, startServer, type ListenOptions, type ServerOptions } from "./server.ts";
export type { CameraProvider, CameraStatus } from "../capture/cameras.ts";
export { HTTP_STATUS, type ApiErrorCode, type HttpErrorCode } from "./errors.ts";
