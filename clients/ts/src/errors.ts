/**
 * The contract's errors (API.md §5, docs/api.md) as typed exceptions: every non-2xx answer of
 * the gateway is `{"error": {"code", "message"}}`, thrown as the subclass of its status.
 */

/** Every code `services/gateway/errors.py` answers; a code added later still arrives as a string. */
export type ErrorCode =
  | "BODY_TOO_LARGE"
  | "RATE_LIMITED"
  | "INVALID_REQUEST"
  | "INVALID_USER"
  | "UNKNOWN_MARKET"
  | "UNKNOWN_ASSET"
  | "INVALID_PRICE"
  | "INVALID_QTY"
  | "INVALID_ORDER"
  | "STALE_TS"
  | "INVALID_SIGNATURE"
  | "FORBIDDEN"
  | "NOT_FOUND"
  | "DUPLICATE"
  | "ORDER_CLOSED"
  | "FILLED_CHANGED"
  | "QTY_NOT_ABOVE_FILLED"
  | "POST_ONLY_WOULD_CROSS"
  | "INSUFFICIENT_BALANCE"
  | "INSUFFICIENT_MARGIN"
  | "MARKET_HALTED"
  | "MARKET_CLOSED"
  | "MARKET_CANCEL_ONLY"
  | "MARKET_POST_ONLY"
  | "MARKET_REDUCE_ONLY"
  | "TOO_MANY_ORDERS"
  | "LIMIT_EXCEEDED"
  | "UNAVAILABLE"
  | "OVERLOADED"
  | "INTERNAL"
  | (string & {});

/** A refusal of the gateway: its HTTP status, contract code and message. */
export class DexApiError extends Error {
  readonly status: number;
  readonly code: ErrorCode;
  /** Seconds to wait, from `Retry-After` (429 only). */
  readonly retryAfter: number | null;

  constructor(status: number, code: ErrorCode, message: string, retryAfter: number | null = null) {
    super(`${status} ${code}: ${message}`);
    this.name = new.target.name;
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** 400: a malformed or invalid request (INVALID_REQUEST, INVALID_PRICE, STALE_TS, ...). */
export class BadRequestError extends DexApiError {}
/** 401: INVALID_SIGNATURE. */
export class SignatureRefusedError extends DexApiError {}
/** 403: FORBIDDEN (the admin token, an agent's scope). */
export class ForbiddenError extends DexApiError {}
/** 404: NOT_FOUND, or UNKNOWN_MARKET named in the path. */
export class NotFoundError extends DexApiError {}
/** 409: DUPLICATE, ORDER_CLOSED and the amend's conflicts. */
export class ConflictError extends DexApiError {}
/** 413: BODY_TOO_LARGE. */
export class BodyTooLargeError extends DexApiError {}
/** 422: the account or the market refuses (INSUFFICIENT_BALANCE, MARKET_HALTED, ...). */
export class RefusedError extends DexApiError {}
/** 429: RATE_LIMITED; `retryAfter` says how long to wait. */
export class RateLimitedError extends DexApiError {}
/** 503: UNAVAILABLE or OVERLOADED. */
export class UnavailableError extends DexApiError {}

const BY_STATUS: Record<number, typeof DexApiError> = {
  400: BadRequestError,
  401: SignatureRefusedError,
  403: ForbiddenError,
  404: NotFoundError,
  409: ConflictError,
  413: BodyTooLargeError,
  422: RefusedError,
  429: RateLimitedError,
  503: UnavailableError,
};

/** The typed exception for an error answer (`body` parsed JSON, or anything else). */
export function errorFromAnswer(status: number, body: unknown, retryAfter: string | null = null): DexApiError {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const code = typeof error?.code === "string" ? error.code : "INTERNAL";
  const message =
    typeof error?.message === "string" ? error.message : `status ${status} without a contract error body`;
  const Kind = BY_STATUS[status] ?? DexApiError;
  const seconds = retryAfter === null ? null : Number.parseInt(retryAfter, 10);
  return new Kind(status, code, message, Number.isFinite(seconds) ? seconds : null);
}
