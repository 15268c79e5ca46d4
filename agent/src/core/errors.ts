/**
 * Every error the agent raises on purpose carries a stable `code` (for programs) and a message
 * that says what to fix (for people). The HTTP layer maps codes to status codes in one place;
 * the CLI prints `code: message` and exits non-zero.
 */
export type ErrorCode =
  | "IMAGE_NOT_FOUND"
  | "IMAGE_EMPTY"
  | "IMAGE_UNSUPPORTED"
  | "IMAGE_CORRUPT"
  | "IMAGE_TOO_LARGE"
  | "PROMPT_INVALID"
  | "REQUEST_INVALID"
  | "MASK_INVALID"
  | "MASK_TOO_COMPLEX"
  | "CAMERA_NOT_FOUND"
  | "CAMERA_NO_FRAME"
  | "CAMERA_NO_RESULT"
  | "MODEL_LOADING"
  | "MODEL_NOT_FOUND"
  | "MODEL_INVALID"
  | "MODEL_FAILED"
  | "MODEL_UPDATE_SOURCE_INVALID"
  | "MODEL_UPDATE_BUSY"
  | "MODEL_UPDATE_FETCH_FAILED"
  | "MODEL_UPDATE_CHECKSUM"
  | "MODEL_UPDATE_INVALID"
  | "MODEL_UPDATE_SELF_TEST"
  | "MODEL_UPDATE_FAILED"
  | "CONFIG_INVALID"
  | "BUSY"
  | "REQUEST_CANCELLED"
  | "REQUEST_EXPIRED";

export class SamEdgeError extends Error {
  override readonly name = "SamEdgeError";

  /** What the agent's log should add to the message: kept from whoever asked (e.g. why a URL could not be fetched). */
  readonly detail: string | undefined;

  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown; detail?: string },
  ) {
    super(message, options);
    this.detail = options?.detail;
  }
}

/** The queue for this kind of request is full: retry after `retryAfterS` seconds. */
export class BusyError extends SamEdgeError {
  constructor(
    message: string,
    readonly retryAfterS: number,
  ) {
    super("BUSY", message);
  }
}

export function isSamEdgeError(err: unknown): err is SamEdgeError {
  return err instanceof SamEdgeError;
}
