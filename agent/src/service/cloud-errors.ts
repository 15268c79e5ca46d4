/**
 * Why the cloud route was not taken or failed. Kept beside the service rather than in
 * ErrorCode because the HTTP layer maps every ErrorCode to a status: these never reach it.
 */
export type CloudErrorCode = "CLOUD_UNAVAILABLE" | "CLOUD_BUDGET_EXHAUSTED" | "CLOUD_REJECTED" | "CLOUD_NOT_CONFIGURED";

export class CloudError extends Error {
  override readonly name = "CloudError";

  constructor(
    readonly code: CloudErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}
