// exchangeToken against a local node:http server that plays the gateway's token endpoint (a stand-in:
// these tests pin the form the SDK sends, its argument checks and how it reads each answer, as
// tests/unit/test_client_exchange.py does for the Python SDK; tests/e2e/test_sdk_typescript.py runs
// test/e2e/exchange.test.mjs against the real endpoint).
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import {
  ACCESS_TOKEN_TYPE,
  CapabilityError,
  GatewayError,
  TOKEN_EXCHANGE_GRANT,
  UnavailableError,
  exchangeToken,
} from "../../dist/esm/index.js";

let server;
let url;
const seen = [];
let reply = () => ({ status: 200, body: { access_token: "macaroon", token_type: "Bearer" } });

function listen(handler) {
  const s = createServer(handler);
  return new Promise((resolve) => s.listen(0, "127.0.0.1", () => resolve(s)));
}

before(async () => {
  server = await listen((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      seen.push({ method: req.method, path: req.url, headers: req.headers, form: new URLSearchParams(body) });
      const r = reply();
      res.writeHead(r.status, { "content-type": "application/json", ...(r.headers ?? {}) });
      res.end(typeof r.body === "string" ? r.body : JSON.stringify(r.body));
    });
  });
  url = `http://127.0.0.1:${server.address().port}`;
});

after(() => server.close());

/** The form as field -> every value it was sent with, in order. */
function fields(form) {
  const out = {};
  for (const key of new Set(form.keys())) out[key] = form.getAll(key);
  return out;
}

const refusal = (error, status = 400) => () => ({ status, body: { error, error_description: `refused: ${error}` } });

test("the request is an RFC 8693 form at /v1/oauth/token and the capability token comes back", async () => {
  reply = () => ({ status: 200, body: { access_token: "macaroon", token_type: "Bearer", scope: "a b" } });
  seen.length = 0;
  assert.equal(await exchangeToken(`${url}/v1/mcp`, "  eyJ.jwt.sig\n", { tools: ["a", "b"] }), "macaroon");
  const [req] = seen;
  assert.equal(req.method, "POST");
  assert.equal(req.path, "/v1/oauth/token");
  assert.equal(req.headers["content-type"], "application/x-www-form-urlencoded");
  assert.deepEqual(fields(req.form), {
    grant_type: ["urn:ietf:params:oauth:grant-type:token-exchange"],
    subject_token: ["eyJ.jwt.sig"],
    subject_token_type: ["urn:ietf:params:oauth:token-type:access_token"],
    scope: ["a b"],
  });
  assert.equal(TOKEN_EXCHANGE_GRANT, "urn:ietf:params:oauth:grant-type:token-exchange");
  assert.equal(ACCESS_TOKEN_TYPE, "urn:ietf:params:oauth:token-type:access_token");
  // without tools: no scope (everything the claims and the tenant allow); any gateway URL form works
  for (const base of [url, `${url}/`, `${url}/v1/mcp/`, `${url}/v1/mcp/billing`]) {
    await exchangeToken(base, "eyJ.jwt.sig");
  }
  assert.deepEqual(
    seen.slice(1).map((r) => [r.path, r.form.has("scope")]),
    Array(4).fill(["/v1/oauth/token", false]),
  );
});

test("resource and audience are sent once per value, trimmed, and not at all when not given", async () => {
  reply = () => ({ status: 200, body: { access_token: "macaroon", token_type: "Bearer" } });
  seen.length = 0;
  const mcp = "https://gw.example.com/v1/mcp";
  await exchangeToken(url, "eyJ.jwt.sig", { resource: [mcp, ` ${mcp}/billing `], audience: "billing" });
  let form = seen.at(-1).form;
  assert.deepEqual(form.getAll("resource"), [mcp, `${mcp}/billing`]);
  assert.deepEqual(form.getAll("audience"), ["billing"]);
  await exchangeToken(url, "eyJ.jwt.sig", { audience: ["billing", "payroll"], resource: null });
  form = seen.at(-1).form;
  assert.deepEqual(form.getAll("audience"), ["billing", "payroll"]);
  assert.equal(form.has("resource"), false);
  await exchangeToken(url, "eyJ.jwt.sig");
  assert.equal(seen.at(-1).form.has("resource") || seen.at(-1).form.has("audience"), false);
  // a value that needs encoding arrives as it was given
  await exchangeToken(url, "eyJ.jwt.sig", { resource: "https://gw.example.com/v1/mcp?x=1&y=ä" });
  assert.deepEqual(seen.at(-1).form.getAll("resource"), ["https://gw.example.com/v1/mcp?x=1&y=ä"]);
});

test("bad arguments are refused with a clear error before any request is sent", async () => {
  seen.length = 0;
  const mcp = "https://gw.example.com/v1/mcp";
  const cases = [
    [[url, ""], /accessToken/],
    [[url, "   "], /accessToken/],
    [[url, undefined], /accessToken/],
    [["", "eyJ.jwt.sig"], /gateway URL/],
    [[" ", "eyJ.jwt.sig"], /gateway URL/],
    [[url, "eyJ.jwt.sig", { tools: "read_invoice" }], /tools/],
    [[url, "eyJ.jwt.sig", { tools: [] }], /tools/],
    [[url, "eyJ.jwt.sig", { tools: [""] }], /tools/],
    [[url, "eyJ.jwt.sig", { tools: ["read_invoice delete_invoice"] }], /tools/],
    [[url, "eyJ.jwt.sig", { tools: ["read_invoice", 3] }], /tools/],
    [[url, "eyJ.jwt.sig", { timeoutMs: 0 }], /timeoutMs/],
    [[url, "eyJ.jwt.sig", { timeoutMs: Number.NaN }], /timeoutMs/],
    [[url, "eyJ.jwt.sig", { timeoutMs: "1000" }], /timeoutMs/],
  ];
  for (const name of ["resource", "audience"]) {
    for (const bad of [[], [""], " ", [mcp, 3], 3]) cases.push([[url, "eyJ.jwt.sig", { [name]: bad }], new RegExp(name)]);
  }
  for (const [args, message] of cases) {
    const err = await exchangeToken(...args).catch((e) => e);
    assert.ok(err instanceof Error && !(err instanceof GatewayError), `${JSON.stringify(args)}: ${err}`);
    assert.match(err.message, message);
  }
  assert.equal(seen.length, 0, "nothing is sent for a bad argument");
});

test("a refusal is a CapabilityError with the OAuth error code in data.error", async () => {
  for (const [error, status] of [
    ["invalid_scope", 400],
    ["invalid_target", 400],
    ["invalid_grant", 400],
    ["invalid_client", 401],
  ]) {
    reply = refusal(error, status);
    const err = await exchangeToken(url, "eyJ.jwt.sig").catch((e) => e);
    assert.ok(err instanceof CapabilityError, `${error}: ${err}`);
    assert.equal(err.code, -32010);
    assert.equal(err.message, `token exchange refused (${error})`);
    assert.equal(err.data.error, error);
    assert.equal(err.check, "capability");
    assert.equal(err.reason, `refused: ${error}`);
  }
});

test("503 and 429 are an UnavailableError that carries Retry-After", async () => {
  reply = refusal("temporarily_unavailable", 503);
  let err = await exchangeToken(url, "eyJ.jwt.sig").catch((e) => e);
  assert.ok(err instanceof UnavailableError, String(err));
  assert.equal(err.code, -32018);
  assert.equal(err.check, "unavailable");
  assert.equal(err.data.error, "temporarily_unavailable");
  assert.equal(err.retryAfter, null);
  // Envoy's rate limit on the token route: 429 + Retry-After (whole seconds)
  reply = () => ({ ...refusal("temporarily_unavailable", 429)(), headers: { "retry-after": "12" } });
  err = await exchangeToken(url, "eyJ.jwt.sig").catch((e) => e);
  assert.ok(err instanceof UnavailableError, String(err));
  assert.equal(err.data.retry_after_ms, 12_000);
  assert.equal(err.retryAfter, 12);
  // a 503 without a JSON body (Envoy's own reply when the admin service is down) is still unavailable
  reply = () => ({ status: 503, body: "no healthy upstream", headers: { "retry-after": "3" } });
  err = await exchangeToken(url, "eyJ.jwt.sig").catch((e) => e);
  assert.ok(err instanceof UnavailableError, String(err));
  assert.equal(err.retryAfter, 3);
  assert.equal(err.data.error, null);
  assert.equal(err.reason, "HTTP 503");
});

test("unexpected answers are a GatewayError with the status and the body", async () => {
  const answers = [
    [{ status: 502, body: "upstream connect error" }, 502],
    [{ status: 200, body: { token_type: "Bearer" } }, 200], // no access_token
    [{ status: 200, body: { access_token: 42 } }, 200],
    [{ status: 200, body: "<html>proxy</html>" }, 200],
    [{ status: 400, body: { message: "not OAuth" } }, 400], // no RFC 6749 error code
    [{ status: 403, body: { error: "access_denied" } }, 403], // a status the endpoint does not use
  ];
  for (const [answer, status] of answers) {
    reply = () => answer;
    const err = await exchangeToken(url, "eyJ.jwt.sig").catch((e) => e);
    assert.ok(err instanceof GatewayError, `${JSON.stringify(answer)}: ${err}`);
    assert.equal(err.httpStatus, status);
    assert.equal(err.message, `token exchange at ${url}/v1/oauth/token failed`);
    assert.equal(err.body, typeof answer.body === "string" ? answer.body : JSON.stringify(answer.body));
  }
  reply = () => ({ status: 502, body: "x".repeat(5000), headers: { "retry-after": "5" } });
  const err = await exchangeToken(url, "eyJ.jwt.sig", null).catch((e) => e);
  assert.ok(err instanceof GatewayError, String(err));
  assert.equal(err.body.length, 2000);
  assert.equal(err.retryAfter, 5, "Retry-After is kept, as on the SDK's other calls");
});

test("a gateway that cannot be reached or does not answer in time is a GatewayError", async () => {
  const closed = await listen(() => {});
  const deadUrl = `http://127.0.0.1:${closed.address().port}`;
  await new Promise((resolve) => closed.close(resolve));
  let err = await exchangeToken(deadUrl, "eyJ.jwt.sig").catch((e) => e);
  assert.ok(err instanceof GatewayError, String(err));
  assert.equal(err.httpStatus, null);
  assert.match(err.message, new RegExp(`cannot reach the gateway at ${deadUrl}/v1/oauth/token: .*ECONNREFUSED`));

  const silent = await listen(() => {}); // accepts, reads, never answers
  try {
    err = await exchangeToken(`http://127.0.0.1:${silent.address().port}`, "eyJ.jwt.sig", { timeoutMs: 200 }).catch(
      (e) => e,
    );
    assert.ok(err instanceof GatewayError, String(err));
    assert.match(err.message, /cannot reach the gateway at .*: TimeoutError/);
  } finally {
    silent.closeAllConnections();
    silent.close();
  }
});
