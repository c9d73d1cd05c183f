/**
 * The SDK's one error tree, mirroring the Python SDK (authz/client/_errors.py).
 *
 * Every class carries what the gateway said: `code` (the JSON-RPC error code, null when there was none),
 * `message`, `data` (the JSON-RPC `error.data` object, `{}` when absent) and, lifted out of `data`,
 * `check`, `reason` and `decisionId` (the id to look up in the audit chain). `errorFromRpc` is the one
 * place that maps a JSON-RPC error to a class.
 */

export const CAPABILITY = -32010;
export const INTENT = -32011;
export const POLICY = -32012;
export const BUDGET = -32013;
export const PROVENANCE = -32014;
export const UNAVAILABLE = -32018;
export const APPROVAL = -32019;

export type ErrorData = Record<string, unknown>;

export interface ErrorOptions {
  decisionId?: string | null;
  retryAfter?: number | null;
  cause?: unknown;
}

export class TesseraError extends Error {
  readonly code: number | null;
  readonly data: ErrorData;
  /** The pipeline stage that decided: capability, intent, policy, budget, provenance, unavailable, approval, protocol. */
  readonly check: string | null;
  readonly reason: string | null;
  readonly decisionId: string | null;

  constructor(code: number | null, message: string, data?: unknown, options: ErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.data = isRecord(data) ? { ...data } : {};
    this.check = str(this.data["check"]);
    this.reason = str(this.data["reason"]);
    this.decisionId = str(this.data["decision_id"]) ?? options.decisionId ?? null;
  }

  override toString(): string {
    let head = this.message;
    if (this.reason && this.reason !== this.message) head = `${head}: ${this.reason}`;
    const tags: string[] = this.code !== null ? [String(this.code)] : [];
    if (this.check) tags.push(this.check);
    if (this.decisionId) tags.push(`decision ${this.decisionId}`);
    return `${this.name}: ${tags.length ? `${head} (${tags.join(", ")})` : head}`;
  }
}

/** -32010: the token is missing, malformed, forged, expired, revoked, or the call is outside its caveats. */
export class CapabilityError extends TesseraError {}

/** -32011: the tool is forbidden by, or absent from, what the user's prompt asked for. */
export class IntentError extends TesseraError {}

/** -32012: the tenant's policy denied the call, or its approval was rejected, expired or used up. */
export class PolicyError extends TesseraError {}

/** -32013: a max_calls/max_cost caveat or a budget rule is exhausted. */
export class BudgetError extends TesseraError {
  readonly scope: string | null;
  readonly limit: number | null;
  /** When the budget refills (null: never, e.g. a token caveat). */
  readonly resetsAt: Date | null;

  constructor(code: number | null, message: string, data?: unknown, options: ErrorOptions = {}) {
    super(code, message, data, options);
    this.scope = str(this.data["scope"]);
    this.limit = num(this.data["limit"]);
    this.resetsAt = time(this.data["resets_at"]);
  }
}

/** -32014: a presented memory entry is unsigned or forged, or provenance is required and missing. */
export class ProvenanceError extends TesseraError {}

/** -32018: a dependency of the gateway failed and it failed closed; safe to retry after `retryAfter` seconds. */
export class UnavailableError extends TesseraError {
  readonly retryAfter: number | null;

  constructor(code: number | null, message: string, data?: unknown, options: ErrorOptions = {}) {
    super(code, message, data, options);
    const ms = num(this.data["retry_after_ms"]);
    this.retryAfter = ms !== null ? ms / 1000 : (options.retryAfter ?? null);
  }
}

/** -32019: a human must approve this call; repeat it with `approvalId` once approved (or use `waitForApproval`). */
export class ApprovalRequired extends TesseraError {
  readonly approvalId: string | null;
  readonly expiresAt: Date | null;
  readonly resumeHeader: string;

  constructor(code: number | null, message: string, data?: unknown, options: ErrorOptions = {}) {
    super(code, message, data, options);
    this.approvalId = str(this.data["approval_id"]);
    this.expiresAt = time(this.data["expires_at"]);
    this.resumeHeader = str(this.data["resume_header"]) ?? "X-Approval-Id";
  }
}

/** Any other JSON-RPC error, or a reply that is JSON but not a valid JSON-RPC response (code null). */
export class ProtocolError extends TesseraError {}

export interface GatewayErrorOptions extends ErrorOptions {
  httpStatus?: number | null;
  body?: string | null;
  code?: number | null;
  data?: unknown;
}

/** The gateway could not be reached or did not answer properly (connection failure, timeout, non-2xx, non-JSON). */
export class GatewayError extends TesseraError {
  readonly httpStatus: number | null;
  readonly body: string | null;
  readonly retryAfter: number | null;

  constructor(message: string, options: GatewayErrorOptions = {}) {
    super(options.code ?? null, message, options.data, options);
    this.httpStatus = options.httpStatus ?? null;
    this.body = options.body ?? null;
    this.retryAfter = options.retryAfter ?? null;
  }

  override toString(): string {
    const text = super.toString();
    return this.httpStatus !== null ? `${text} [HTTP ${this.httpStatus}]` : text;
  }
}

type ErrorClass = new (code: number | null, message: string, data?: unknown, options?: ErrorOptions) => TesseraError;

/** JSON-RPC code -> class; every other code is a ProtocolError. */
export const ERRORS_BY_CODE: ReadonlyMap<number, ErrorClass> = new Map<number, ErrorClass>([
  [CAPABILITY, CapabilityError],
  [INTENT, IntentError],
  [POLICY, PolicyError],
  [BUDGET, BudgetError],
  [PROVENANCE, ProvenanceError],
  [UNAVAILABLE, UnavailableError],
  [APPROVAL, ApprovalRequired],
]);

/** The typed error for a JSON-RPC `error` object; anything malformed becomes a ProtocolError with code null. */
export function errorFromRpc(error: unknown, options: ErrorOptions = {}): TesseraError {
  const opts: ErrorOptions = { decisionId: options.decisionId ?? null, retryAfter: options.retryAfter ?? null };
  if (!isRecord(error) || typeof error["code"] !== "number" || !Number.isInteger(error["code"])) {
    return new ProtocolError(null, `malformed JSON-RPC error: ${excerpt(error)}`, undefined, opts);
  }
  const code = error["code"];
  const message = typeof error["message"] === "string" ? error["message"] : "error";
  const raw = error["data"];
  const data = isRecord(raw) ? raw : raw === undefined || raw === null ? {} : { value: raw };
  const cls = ERRORS_BY_CODE.get(code) ?? ProtocolError;
  return new cls(code, message, data, opts);
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function str(value: unknown): string | null {
  return typeof value === "string" && value ? value : null;
}

function num(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function time(value: unknown): Date | null {
  if (typeof value === "number" && Number.isFinite(value)) return new Date(value * 1000);
  if (typeof value !== "string") return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function excerpt(value: unknown, limit = 200): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length <= limit ? text : `${text.slice(0, limit - 3)}...`;
}
