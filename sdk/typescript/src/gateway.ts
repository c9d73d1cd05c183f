/**
 * `Gateway`: one MCP endpoint behind Tessera, one capability token. Mirrors the Python SDK's Gateway
 * (authz/client/_gateway.py, _protocol.py): the same headers, the same reply judging, the same errors.
 */
import { waitForApproval } from "./approval.js";
import {
  GatewayError,
  ProtocolError,
  TesseraError,
  errorFromRpc,
  isRecord,
} from "./errors.js";
import { retryAfter, transportError } from "./http.js";

export const MCP_PATH = "/v1/mcp";
export const TOOL_CALL_PATH = "/v1/tool-call";
export const DECISION_HEADER = "x-tessera-decision-id";
export const PROMPT_HEADER = "X-Intent-Prompt";
export const APPROVAL_HEADER = "X-Approval-Id";
export const PROVENANCE_HEADER = "X-Memory-Provenance";
export const TOKEN_ENV = "TESSERA_TOKEN";

const BODY_EXCERPT = 2000;
const MAX_PAGES = 100;

export interface ToolResult {
  /** The MCP content blocks exactly as the server sent them. */
  content: Record<string, unknown>[];
  /** MCP's isError: the call was authorized and the tool ran, but reported a failure. */
  isError: boolean;
  structuredContent: unknown;
  /** The text blocks joined by newlines. */
  text: string;
  /** The gateway's audit id for the allow decision. */
  decisionId: string | null;
  requestId: unknown;
  raw: unknown;
}

export interface CallOptions {
  /** The user's request that led to this call (sent percent-encoded as X-Intent-Prompt). */
  intentPrompt?: string;
  /** Resumes a call a human approved. */
  approvalId?: string;
  /** Seconds to keep repeating a call that needs approval until it is decided (default: do not wait). */
  waitForApproval?: number;
  /** Signed memory entries to present (X-Memory-Provenance). */
  provenance?: Record<string, unknown>[];
  requestId?: string | number;
}

export interface GatewayOptions {
  /** Bounds each HTTP request, in seconds (default 10). */
  timeout?: number;
  /** A fetch implementation (default: the global one). */
  fetch?: typeof fetch;
}

/** Percent-encode UTF-8 so a prompt in any language (and with newlines) fits one header value. */
export function encodePrompt(prompt: string): string {
  // as Python's quote(prompt, safe=""): only letters, digits and -_.~ stay as they are
  return encodeURIComponent(prompt).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** `/v1/mcp`, or one of several tool servers behind the gateway: `/v1/mcp/<name>`. */
const MCP_SUFFIX = /\/v1\/mcp(\/[a-z0-9_-]+)?$/;

function splitUrl(url: string): [string, string] {
  if (typeof url !== "string" || !url.trim()) {
    throw new Error("the gateway URL must be a non-empty string, e.g. http://127.0.0.1:8080");
  }
  const trimmed = url.trim().replace(/\/+$/, "");
  const match = MCP_SUFFIX.exec(trimmed);
  return match ? [trimmed.slice(0, match.index), match[0]] : [trimmed, MCP_PATH];
}

/** `http://host:8080` -> its base URL without a trailing slash or an /v1/mcp[/<name>] suffix. */
export function baseUrl(url: string): string {
  return splitUrl(url)[0];
}

/** The MCP path of `url`: `/v1/mcp`, or `/v1/mcp/<name>` when it names one of several tool servers. */
export function mcpPath(url: string): string {
  return splitUrl(url)[1];
}

function cleanToken(token: string | undefined | null): string | null {
  if (token === undefined || token === null) return null;
  let text = token.trim();
  if (text.toLowerCase().startsWith("bearer ")) text = text.slice(7).trim();
  if (/[\s\x00-\x1f\x7f]/.test(text)) throw new Error("token must not contain whitespace or control characters");
  return text || null;
}

/** Tessera's request headers: the bearer token (if any) and the optional per-call inputs. */
export function tesseraHeaders(
  token: string | null | undefined,
  options: Pick<CallOptions, "intentPrompt" | "approvalId" | "provenance">,
): Record<string, string> {
  const headers: Record<string, string> = {};
  const clean = cleanToken(token);
  if (clean) headers["authorization"] = `Bearer ${clean}`;
  if (options.intentPrompt !== undefined) headers[PROMPT_HEADER] = encodePrompt(options.intentPrompt);
  if (options.approvalId !== undefined) {
    const id = options.approvalId.trim();
    if (!id || /[\x00-\x1f\x7f]/.test(id)) throw new Error("approvalId must be a non-empty printable string");
    headers[APPROVAL_HEADER] = id;
  }
  if (options.provenance !== undefined) {
    headers[PROVENANCE_HEADER] = Buffer.from(JSON.stringify(options.provenance), "utf8").toString("base64url");
  }
  return headers;
}

export class Gateway {
  readonly url: string;
  /** `/v1/mcp`, or `/v1/mcp/<name>` when the URL given named one tool server of several. */
  readonly mcpPath: string;
  private readonly token: string | null;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;
  private nextId = 1;

  /** `token` defaults to $TESSERA_TOKEN. */
  constructor(url: string, token?: string | null, options: GatewayOptions = {}) {
    const timeout = options.timeout ?? 10;
    if (!(typeof timeout === "number" && timeout > 0)) throw new Error("timeout must be a positive number of seconds");
    this.url = baseUrl(url);
    this.mcpPath = mcpPath(url);
    this.token = cleanToken(token ?? process.env[TOKEN_ENV]);
    this.timeoutMs = timeout * 1000;
    this.fetchImpl = options.fetch ?? fetch;
  }

  /** A gateway for the same endpoint with another token (e.g. an attenuated one for a sub-agent). */
  withToken(token: string): Gateway {
    if (typeof token !== "string" || !token.trim()) throw new Error("withToken needs a token");
    return new Gateway(this.url + this.mcpPath, token, { timeout: this.timeoutMs / 1000, fetch: this.fetchImpl });
  }

  /**
   * Call `tool` through the gateway (MCP tools/call on /v1/mcp). Resolves to the tool's result (check
   * `isError`); rejects with a TesseraError subclass when the gateway denied or could not answer.
   */
  async toolCall(tool: string, args: Record<string, unknown> = {}, options: CallOptions = {}): Promise<ToolResult> {
    const params = toolCallParams(tool, args);
    return this.withApprovalWait(options, async (approvalId) => {
      const [result, decisionId, rid] = await this.rpc(
        "tools/call",
        params,
        options.requestId,
        this.headers({ ...options, approvalId }),
      );
      return toolResult(result, decisionId, rid);
    });
  }

  /**
   * Call `tool` through `/v1/tool-call` (for HTTP upstreams that do not speak MCP). Resolves to the
   * upstream's JSON answer; denials reject with the same typed errors as toolCall.
   */
  async httpToolCall(tool: string, args: Record<string, unknown> = {}, options: CallOptions = {}): Promise<unknown> {
    const params = toolCallParams(tool, args);
    return this.withApprovalWait(options, async (approvalId) => {
      const body = JSON.stringify({ tool: params.name, arguments: params.arguments });
      const response = await this.post(TOOL_CALL_PATH, body, this.headers({ ...options, approvalId }));
      const decisionId = response.headers.get(DECISION_HEADER) || null;
      const text = await response.text();
      let doc: unknown;
      try {
        doc = text ? JSON.parse(text) : null;
      } catch {
        doc = undefined;
      }
      const error = isRecord(doc) ? doc["error"] : undefined;
      // Denials come as {"error": {code, message, data}} with a 401/403/429/202/503/400 status.
      if (isRecord(error) && (response.status === 202 || response.status >= 400)) {
        throw errorFromRpc(error, { decisionId, retryAfter: retryAfter(response.headers) });
      }
      if (response.status < 200 || response.status >= 300) {
        throw new GatewayError(`the gateway answered HTTP ${response.status}`, {
          httpStatus: response.status,
          body: excerpt(text),
          retryAfter: retryAfter(response.headers),
          decisionId,
        });
      }
      if (doc === undefined) {
        throw new GatewayError("the gateway answered with a body that is not JSON", {
          httpStatus: response.status,
          body: excerpt(text),
          decisionId,
        });
      }
      return doc;
    });
  }

  /** The tools the MCP server behind the gateway offers (tools/list, every page). */
  async listTools(): Promise<Record<string, unknown>[]> {
    const tools: Record<string, unknown>[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < MAX_PAGES; page++) {
      const result = await this.request("tools/list", cursor ? { cursor } : undefined);
      if (!isRecord(result) || !Array.isArray(result["tools"] ?? [])) throw new ProtocolError(null, "malformed tools/list result");
      tools.push(...((result["tools"] as unknown[]) ?? []).filter(isRecord));
      cursor = typeof result["nextCursor"] === "string" ? result["nextCursor"] : null;
      if (cursor === null) break;
    }
    return tools;
  }

  /** Send any other JSON-RPC request through the gateway; resolves to its result. */
  async request(method: string, params?: Record<string, unknown>): Promise<unknown> {
    return (await this.rpc(method, params, undefined, this.headers({})))[0];
  }

  private withApprovalWait<T>(options: CallOptions, attempt: (approvalId: string | undefined) => Promise<T>): Promise<T> {
    return waitForApproval(attempt, options.waitForApproval, options.approvalId);
  }

  private headers(options: CallOptions): Record<string, string> {
    return {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      ...tesseraHeaders(this.token, options),
    };
  }

  private async post(path: string, body: string, headers: Record<string, string>): Promise<Response> {
    const url = this.url + path;
    try {
      return await this.fetchImpl(url, {
        method: "POST",
        body,
        headers,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (exc) {
      throw transportError(exc, url);
    }
  }

  private async rpc(
    method: string,
    params: Record<string, unknown> | undefined,
    requestId: string | number | undefined,
    headers: Record<string, string>,
  ): Promise<[unknown, string | null, unknown]> {
    const rid = requestId ?? this.nextId++;
    const message: Record<string, unknown> = { jsonrpc: "2.0", id: rid, method };
    if (params !== undefined) message["params"] = params;
    const response = await this.post(this.mcpPath, JSON.stringify(message), headers);
    const body = await response.text().catch((exc: unknown) => {
      throw new GatewayError(`the gateway's reply could not be read: ${String(exc)}`, { cause: exc });
    });
    const [result, decisionId] = parseReply(response.status, response.headers, body, rid);
    return [result, decisionId, rid];
  }
}

function toolCallParams(tool: string, args: Record<string, unknown>): { name: string; arguments: Record<string, unknown> } {
  if (typeof tool !== "string" || !tool) throw new Error("tool must be a non-empty string");
  if (!isRecord(args)) throw new TypeError("arguments must be an object");
  return { name: tool, arguments: { ...args } };
}

function toolResult(result: unknown, decisionId: string | null, requestId: unknown): ToolResult {
  if (!isRecord(result)) throw new ProtocolError(null, "malformed tools/call result: not an object", undefined, { decisionId });
  const content = result["content"] ?? [];
  if (!Array.isArray(content) || !content.every(isRecord)) {
    throw new ProtocolError(null, "malformed tools/call result: content is not a list of blocks", undefined, { decisionId });
  }
  return {
    content,
    isError: result["isError"] === true,
    structuredContent: result["structuredContent"] ?? null,
    text: content
      .filter((b) => b["type"] === "text" && typeof b["text"] === "string")
      .map((b) => b["text"] as string)
      .join("\n"),
    decisionId,
    requestId,
    raw: result,
  };
}

function excerpt(body: string): string {
  return body.length > BODY_EXCERPT ? `${body.slice(0, BODY_EXCERPT)}...` : body;
}

function* sseMessages(body: string): Generator<unknown> {
  for (const event of body.replace(/\r\n?/g, "\n").split("\n\n")) {
    const lines = event
      .split("\n")
      .filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).replace(/^ /, ""));
    if (lines.length === 0) continue;
    try {
      yield JSON.parse(lines.join("\n"));
    } catch {
      continue;
    }
  }
}

/** Judge one HTTP reply to a JSON-RPC request: its result and the decision id, or throw the typed error. */
export function parseReply(status: number, headers: Headers, body: string, requestId: unknown): [unknown, string | null] {
  const decisionId = headers.get(DECISION_HEADER) || null;
  const contentType = (headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase() ?? "";
  if (status < 200 || status >= 300) throw statusError(status, headers, body, decisionId);
  let message: unknown;
  if (contentType === "text/event-stream") {
    for (const m of sseMessages(body)) {
      if (isRecord(m) && ("result" in m || "error" in m)) {
        message = m;
        break;
      }
    }
    if (message === undefined) {
      throw new GatewayError("the gateway's event stream carried no JSON-RPC response", {
        httpStatus: status,
        body: excerpt(body),
        decisionId,
      });
    }
  } else {
    try {
      message = JSON.parse(body);
    } catch {
      throw new GatewayError(
        `the gateway answered with a body that is not JSON${contentType ? ` (${contentType})` : ""}`,
        { httpStatus: status, body: excerpt(body), decisionId },
      );
    }
  }
  return judgeMessage(message, requestId, decisionId, retryAfter(headers));
}

function judgeMessage(message: unknown, requestId: unknown, decisionId: string | null, after: number | null): [unknown, string | null] {
  if (!isRecord(message) || message["jsonrpc"] !== "2.0") {
    throw new ProtocolError(null, "the reply is not a JSON-RPC 2.0 response", undefined, { decisionId });
  }
  const id = message["id"];
  if ("error" in message) {
    // An error may carry id null when the server could not read the request's id.
    if (id !== requestId && id !== null && id !== undefined) {
      throw new ProtocolError(null, `the reply answers request ${JSON.stringify(id)}, not ${JSON.stringify(requestId)}`);
    }
    throw errorFromRpc(message["error"], { decisionId, retryAfter: after });
  }
  if (id !== requestId) {
    throw new ProtocolError(null, `the reply answers request ${JSON.stringify(id)}, not ${JSON.stringify(requestId)}`, undefined, { decisionId });
  }
  if (!("result" in message)) throw new ProtocolError(null, "the reply has neither result nor error", undefined, { decisionId });
  return [message["result"], decisionId];
}

function statusError(status: number, headers: Headers, body: string, decisionId: string | null): TesseraError {
  let code: number | null = null;
  let data: unknown;
  let message = `the gateway answered HTTP ${status}`;
  let doc: unknown;
  try {
    doc = body ? JSON.parse(body) : null;
  } catch {
    doc = null;
  }
  const error = isRecord(doc) ? doc["error"] : undefined;
  if (isRecord(error)) {
    const typed = errorFromRpc(error, { decisionId });
    code = typed.code;
    data = typed.data;
    message = `${message}: ${typed.message}`;
  }
  return new GatewayError(message, { httpStatus: status, body: excerpt(body), retryAfter: retryAfter(headers), code, data, decisionId });
}
