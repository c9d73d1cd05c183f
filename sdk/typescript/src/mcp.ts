/**
 * Agents built on the official TypeScript MCP SDK (`@modelcontextprotocol/sdk`): its `Client` and
 * `StreamableHTTPClientTransport` through Tessera. Mirrors the Python SDK's helpers (authz/client/_mcp.py).
 *
 * Nothing here imports the MCP SDK: the adapter works on its objects by shape, so `tessera-authz` keeps
 * no runtime dependency and the MCP SDK stays the agent's own (an optional peer dependency).
 *
 * ```ts
 * const client = withTesseraErrors(new Client({ name: "agent", version: "1.0.0" }));
 * await client.connect(new StreamableHTTPClientTransport(mcpEndpoint(url), tesseraTransportOptions(token)));
 * await client.callTool({ name: "read_invoice", arguments: { invoice_id: "INV-1001" },
 *                         _meta: tesseraMeta({ intentPrompt: "show me invoice INV-1001" }) });
 * // a denial rejects with PolicyError, BudgetError, ApprovalRequired ... instead of McpError
 * ```
 */
import { GatewayError, ProtocolError, TesseraError, errorFromRpc, isRecord } from "./errors.js";
import { TOKEN_ENV, baseUrl, mcpPath, tesseraHeaders } from "./gateway.js";

/** The `params._meta` keys the gateway reads per call (it prefers them to the connection's headers). */
export const META_PROMPT = "tessera/intent-prompt";
export const META_APPROVAL = "tessera/approval-id";
export const META_PROVENANCE = "tessera/provenance";

export interface TesseraInputs {
  /** The user's request that led to the call(s). */
  intentPrompt?: string;
  /** Resumes a call a human approved. */
  approvalId?: string;
  /** Signed memory entries that shaped the call(s). */
  provenance?: Record<string, unknown>[];
}

/**
 * The gateway's MCP endpoint for `url` (`http://host:8080` -> `http://host:8080/v1/mcp`; a named tool
 * server's `.../v1/mcp/<name>` is kept), for the transport.
 */
export function mcpEndpoint(url: string): URL {
  return new URL(baseUrl(url) + mcpPath(url));
}

/**
 * HTTP headers for every request of an MCP connection through Tessera: `Authorization: Bearer` (the
 * token defaults to $TESSERA_TOKEN) and, when given, X-Intent-Prompt, X-Approval-Id and
 * X-Memory-Provenance. They hold for the whole connection; for values that change per call use
 * `tesseraMeta`.
 */
export function mcpHeaders(token?: string | null, inputs: TesseraInputs = {}): Record<string, string> {
  return tesseraHeaders(token ?? process.env[TOKEN_ENV], inputs);
}

/** Options for `new StreamableHTTPClientTransport(mcpEndpoint(url), ...)`: Tessera's headers on every request. */
export function tesseraTransportOptions(
  token?: string | null,
  inputs: TesseraInputs & { headers?: Record<string, string> } = {},
): { requestInit: { headers: Record<string, string> } } {
  const { headers, ...rest } = inputs;
  return { requestInit: { headers: { ...(headers ?? {}), ...mcpHeaders(token, rest) } } };
}

/** `_meta` for one `callTool({ name, arguments, _meta })`: the same inputs as the headers, per call. */
export function tesseraMeta(inputs: TesseraInputs = {}, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const meta: Record<string, unknown> = { ...extra };
  if (inputs.intentPrompt !== undefined) meta[META_PROMPT] = inputs.intentPrompt;
  if (inputs.approvalId !== undefined) meta[META_APPROVAL] = inputs.approvalId;
  if (inputs.provenance !== undefined) meta[META_PROVENANCE] = inputs.provenance.map((entry) => ({ ...entry }));
  return meta;
}

const MCP_PREFIX = /^MCP error -?\d+: /;
const HTTP_PREFIX = "Streamable HTTP error: ";
const POST_PREFIX = "Error POSTing to endpoint: ";

/**
 * The typed Tessera error for anything the MCP SDK threw. Its `McpError` (a JSON-RPC error: how the
 * gateway answers a denial on /v1/mcp) becomes the class for its code (-32012 -> PolicyError ...) with
 * `data` intact; its `StreamableHTTPError` (a non-2xx answer, e.g. 403 for a denied notification) a
 * GatewayError with `httpStatus` and, when the body is a JSON-RPC error, its code and data; a failed
 * fetch a GatewayError. Anything else becomes a ProtocolError with code null; a TesseraError is returned
 * as it is. The original error is the result's `cause`.
 */
export function errorFromMcp(error: unknown): TesseraError {
  if (error instanceof TesseraError) return error;
  const e = isRecord(error) || error instanceof Error ? (error as unknown as Record<string, unknown>) : {};
  const code = e["code"];
  const text = error instanceof Error ? error.message : String(error);
  if (e["name"] === "McpError" && typeof code === "number" && Number.isInteger(code)) {
    const typed = errorFromRpc({ code, message: text.replace(MCP_PREFIX, ""), data: e["data"] });
    return withCause(typed, error);
  }
  if (text.startsWith(HTTP_PREFIX) && typeof code === "number") {
    const detail = text.slice(HTTP_PREFIX.length);
    if (code <= 0) return new ProtocolError(null, detail, undefined, { cause: error });
    let rpc: TesseraError | null = null;
    const body = detail.startsWith(POST_PREFIX) ? detail.slice(POST_PREFIX.length) : null;
    try {
      const doc: unknown = body ? JSON.parse(body) : null;
      if (isRecord(doc) && isRecord(doc["error"])) rpc = errorFromRpc(doc["error"]);
    } catch {
      rpc = null;
    }
    return new GatewayError(`the gateway answered HTTP ${code}${rpc ? `: ${rpc.message}` : ""}`, {
      httpStatus: code,
      body,
      code: rpc?.code ?? null,
      data: rpc?.data,
      cause: error,
    });
  }
  if (error instanceof TypeError && /fetch failed/i.test(text)) {
    const why = error.cause instanceof Error ? `: ${error.cause.message}` : "";
    return new GatewayError(`cannot reach the gateway${why}`, { cause: error });
  }
  const name = error instanceof Error ? error.name : typeof error;
  return new ProtocolError(null, `${name}: ${text}`, undefined, { cause: error });
}

function withCause(typed: TesseraError, cause: unknown): TesseraError {
  Object.defineProperty(typed, "cause", { value: cause, enumerable: false, configurable: true, writable: true });
  return typed;
}

/** Anything with the MCP SDK Client's `request` method (every other Client call goes through it). */
interface Requester {
  request(...args: never[]): Promise<unknown>;
}

/**
 * Make an MCP SDK `Client` reject with Tessera's typed errors: `connect`, `callTool`, `listTools` and
 * every other request then throw PolicyError, BudgetError, ApprovalRequired... (see `errorFromMcp`)
 * instead of McpError. Returns the same client, changed in place.
 */
export function withTesseraErrors<C extends Requester>(client: C): C {
  const original = client.request;
  if (typeof original !== "function") throw new TypeError("withTesseraErrors needs an MCP SDK Client");
  const request = async function (this: unknown, ...args: unknown[]): Promise<unknown> {
    try {
      return await (original as (...a: unknown[]) => Promise<unknown>).apply(this, args);
    } catch (exc) {
      throw errorFromMcp(exc);
    }
  };
  Object.defineProperty(client, "request", { value: request, configurable: true, writable: true });
  return client;
}
