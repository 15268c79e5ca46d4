/** The typed client of the SAM API (hosted, or the local API of a box) and its wire types. */
export { SamApiError, SamClient, type EverythingOptions, type ImageInput, type InteractiveOptions, type MaskInput, type Prompt, type SamClientOptions } from "./client.ts";
export type * from "./types.ts";
