/**
 * Token exchange from the agent's side: its IdP access token in, a Tessera capability token out.
 * Mirrors the Python SDK's `exchange_token` (authz/client/_exchange.py): the same form, the same checks
 * of the arguments, the same errors for the same answers.
 *
 * `POST <gateway>/v1/oauth/token` (RFC 8693 style, docs/mcp.md). The capability token that comes back is
 * a macaroon: hand it to `Gateway`, or narrow it offline with `attenuate` for sub-agents.
 */
import {
  CAPABILITY,
  CapabilityError,
  GatewayError,
  UNAVAILABLE,
  UnavailableError,
  isRecord,
  type ErrorData,
} from "./errors.js";
import { baseUrl } from "./gateway.js";
import { retryAfter, transportError } from "./http.js";

export const TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange";
export const ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token";
export const TOKEN_PATH = "/v1/oauth/token";

const BODY_EXCERPT = 2000;

export interface ExchangeOptions {
  /** At most these tools (sent as `scope`); undefined: everything the token's claims and the tenant allow. */
  tools?: readonly string[] | null;
  /** RFC 8707 resource URI(s), e.g. `https://gw.example.com/v1/mcp/billing`: binds the token to those MCP servers. */
  resource?: string | readonly string[] | null;
  /** Server name(s) such as `billing`, or such URIs: binds the token to those MCP servers. */
  audience?: string | readonly string[] | null;
  /** Bounds the request, in milliseconds (default 10 000). */
  timeoutMs?: number;
}

/** `resource` / `audience` as the values to send (each value repeats the field in the form). */
function targets(name: string, value: string | readonly string[] | null | undefined): string[] {
  if (value === undefined || value === null) return [];
  const values: unknown[] = typeof value === "string" ? [value] : Array.isArray(value) ? [...value] : [value];
  if (values.length === 0 || !values.every((v): v is string => typeof v === "string" && v.trim() !== "")) {
    throw new Error(`${name} must be a non-empty string or a non-empty array of them (undefined: unbound)`);
  }
  return values.map((v) => (v as string).trim());
}

/** The token endpoint's URL and the form to post there; throws on a bad argument before anything is sent. */
function exchangeRequest(
  gatewayUrl: string,
  accessToken: string,
  options: Omit<ExchangeOptions, "timeoutMs"> = {},
): [string, URLSearchParams] {
  if (typeof accessToken !== "string" || !accessToken.trim()) {
    throw new Error("accessToken must be the agent's access token from its authorization server");
  }
  if (typeof gatewayUrl !== "string" || !gatewayUrl.trim()) {
    throw new Error("the gateway URL must be a non-empty string, e.g. https://gw.example.com");
  }
  const form = new URLSearchParams({
    grant_type: TOKEN_EXCHANGE_GRANT,
    subject_token: accessToken.trim(),
    subject_token_type: ACCESS_TOKEN_TYPE,
  });
  const tools = options.tools;
  if (tools !== undefined && tools !== null) {
    if (!Array.isArray(tools) || tools.length === 0) {
      throw new Error("tools must be a non-empty array of tool names (undefined: all allowed)");
    }
    // `scope` is space-separated (RFC 6749 §3.3): a name with whitespace in it would ask for other tools.
    if (!tools.every((t) => typeof t === "string" && t !== "" && !/\s/.test(t))) {
      throw new Error("tools must be tool names: non-empty strings without whitespace");
    }
    form.set("scope", tools.join(" "));
  }
  // RFC 8693 §2.1: both may be given several times; the gateway binds the token to every MCP server they
  // name (and refuses the whole request, invalid_target, if one names a server it does not serve).
  for (const [name, value] of [
    ["resource", options.resource],
    ["audience", options.audience],
  ] as const) {
    for (const v of targets(name, value)) form.append(name, v);
  }
  // A URL naming the MCP endpoint (/v1/mcp, or one server's /v1/mcp/<name>) still means this gateway.
  return [baseUrl(gatewayUrl) + TOKEN_PATH, form];
}

/** Judge the token endpoint's answer: the capability token, or the SDK error the Python SDK raises for it. */
function exchangeResult(url: string, status: number, headers: Headers, text: string): string {
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (status === 200 && isRecord(body) && typeof body["access_token"] === "string") return body["access_token"];
  // The gateway answers errors as RFC 6749 §5.2 says: {"error": <code>, "error_description": ...}.
  const oauthError = isRecord(body) && typeof body["error"] === "string" ? body["error"] : null;
  const description = isRecord(body) ? body["error_description"] : undefined;
  const data: ErrorData = {
    check: "capability",
    reason: typeof description === "string" ? description : `HTTP ${status}`,
    error: oauthError,
  };
  if ((status === 400 || status === 401) && oauthError) {
    throw new CapabilityError(CAPABILITY, `token exchange refused (${oauthError})`, data);
  }
  if (status === 429 || status === 503) {
    // rate limited (Envoy's 429 says when to come back), or the issuer's keys are unavailable
    const header = headers.get("retry-after") ?? "";
    if (/^\d+$/.test(header)) data["retry_after_ms"] = Number(header) * 1000;
    throw new UnavailableError(UNAVAILABLE, "token exchange unavailable", { ...data, check: "unavailable" }, {
      retryAfter: retryAfter(headers),
    });
  }
  throw new GatewayError(`token exchange at ${url} failed`, {
    httpStatus: status,
    body: text.slice(0, BODY_EXCERPT),
    retryAfter: retryAfter(headers),
  });
}

/**
 * Trade `accessToken` (a JWT from an issuer the gateway trusts) for a capability token, at most `tools`
 * (undefined: everything the token's claims and the tenant allow).
 *
 * `resource` (absolute URIs, RFC 8707, e.g. `https://gw.example.com/v1/mcp/billing`) and `audience`
 * (server names such as `billing`, or such URIs), each one value or several (RFC 8693 §2.1), bind the
 * token to the MCP servers they name; undefined leaves it unbound.
 *
 * Rejects with `CapabilityError` when refused (`err.data.error` is the OAuth error code, e.g.
 * `invalid_scope` for tools beyond what is allowed, `invalid_target` for a resource or audience the
 * gateway does not serve, `invalid_grant` for a subject token that does not verify),
 * `UnavailableError` when the gateway cannot check the token now (`retryAfter` seconds when it said),
 * `GatewayError` when it cannot be reached or answers something else; with a plain `Error` for a bad argument,
 * before any request is sent.
 */
export async function exchangeToken(
  gatewayUrl: string,
  accessToken: string,
  options: ExchangeOptions | null = {},
): Promise<string> {
  options ??= {};
  const timeoutMs = options.timeoutMs ?? 10_000;
  if (typeof timeoutMs !== "number" || !(timeoutMs > 0) || !Number.isFinite(timeoutMs)) {
    throw new Error("timeoutMs must be a positive number of milliseconds");
  }
  const [url, form] = exchangeRequest(gatewayUrl, accessToken, options);
  const signal = AbortSignal.timeout(timeoutMs);
  let response: Response;
  let text: string;
  try {
    response = await fetch(url, {
      method: "POST",
      body: form.toString(),
      headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json" },
      signal,
    });
    // the timeout covers the body too: a gateway that stops mid-answer is as unreachable as a silent one
    text = await response.text();
  } catch (exc) {
    throw transportError(exc, url);
  }
  return exchangeResult(url, response.status, response.headers, text);
}
