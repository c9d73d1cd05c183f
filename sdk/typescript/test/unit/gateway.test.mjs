// The client against a local node:http server that plays the gateway (a stand-in: these tests pin the
// wire format the client sends and how it judges replies; test/e2e/ runs against the real stack).
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";
import { ApprovalRequired, Gateway, GatewayError, PolicyError, ProtocolError, BudgetError } from "../../dist/esm/index.js";

let server;
let url;
const seen = [];
let reply = () => ({ status: 200, body: {} });

before(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk) => (body += chunk));
    req.on("end", () => {
      const request = { method: req.method, path: req.url, headers: req.headers, body: JSON.parse(body || "null") };
      seen.push(request);
      const r = reply(request);
      res.writeHead(r.status, { "content-type": r.type ?? "application/json", ...(r.headers ?? {}) });
      res.end(typeof r.body === "string" ? r.body : JSON.stringify(r.body));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${server.address().port}`;
});

after(() => server.close());

const ok = (req, text = "ok") => ({
  status: 200,
  headers: { "x-tessera-decision-id": "dec-1" },
  body: { jsonrpc: "2.0", id: req.body.id, result: { content: [{ type: "text", text }], isError: false } },
});

test("toolCall posts JSON-RPC tools/call with the token, prompt and approval headers", async () => {
  reply = (req) => ok(req);
  seen.length = 0;
  const gw = new Gateway(`${url}/`, "Bearer tok-1");
  const result = await gw.toolCall("read_invoice", { invoice_id: "INV-1" }, { intentPrompt: "zeig mir INV-1 (~ü!)\n", approvalId: "ap-9" });
  assert.equal(result.text, "ok");
  assert.equal(result.decisionId, "dec-1");
  const [req] = seen;
  assert.equal(req.path, "/v1/mcp");
  assert.equal(req.headers.authorization, "Bearer tok-1");
  assert.equal(req.headers["x-intent-prompt"], "zeig%20mir%20INV-1%20%28~%C3%BC%21%29%0A");
  assert.equal(req.headers["x-approval-id"], "ap-9");
  assert.deepEqual(req.body, {
    jsonrpc: "2.0",
    id: 1,
    method: "tools/call",
    params: { name: "read_invoice", arguments: { invoice_id: "INV-1" } },
  });
});

test("a URL naming one of several tool servers keeps its /v1/mcp/<name> path, also for withToken", async () => {
  reply = (req) => ok(req);
  seen.length = 0;
  const gw = new Gateway(`${url}/v1/mcp/billing/`, "tok-1");
  assert.equal(gw.url, url);
  assert.equal(gw.mcpPath, "/v1/mcp/billing");
  await gw.toolCall("read_invoice", { invoice_id: "INV-1" });
  await gw.withToken("tok-2").toolCall("read_invoice", { invoice_id: "INV-1" });
  assert.deepEqual(
    seen.map((r) => [r.path, r.headers.authorization]),
    [
      ["/v1/mcp/billing", "Bearer tok-1"],
      ["/v1/mcp/billing", "Bearer tok-2"],
    ],
  );
});

test("a JSON-RPC error becomes its typed error with the decision id", async () => {
  reply = (req) => ({
    status: 200,
    headers: { "x-tessera-decision-id": "dec-2" },
    body: { jsonrpc: "2.0", id: req.body.id, error: { code: -32012, message: "denied by policy", data: { check: "policy" } } },
  });
  const err = await new Gateway(url, "t").toolCall("delete_invoice").catch((e) => e);
  assert.ok(err instanceof PolicyError);
  assert.equal(err.decisionId, "dec-2");
});

test("an SSE reply is read", async () => {
  reply = (req) => ({
    status: 200,
    type: "text/event-stream",
    body: `event: message\ndata: ${JSON.stringify(ok(req, "streamed").body)}\n\n`,
  });
  assert.equal((await new Gateway(url, "t").toolCall("x")).text, "streamed");
});

test("non-2xx, non-JSON and mismatched replies are errors, never results", async () => {
  reply = () => ({ status: 500, type: "text/plain", body: "boom", headers: { "retry-after": "2" } });
  let err = await new Gateway(url, "t").toolCall("x").catch((e) => e);
  assert.ok(err instanceof GatewayError);
  assert.equal(err.httpStatus, 500);
  assert.equal(err.retryAfter, 2);
  reply = () => ({ status: 200, type: "text/html", body: "<html>" });
  err = await new Gateway(url, "t").toolCall("x").catch((e) => e);
  assert.ok(err instanceof GatewayError && /not JSON/.test(err.message));
  reply = (req) => ({ status: 200, body: { jsonrpc: "2.0", id: 999, result: {} } });
  err = await new Gateway(url, "t").toolCall("x").catch((e) => e);
  assert.ok(err instanceof ProtocolError);
});

test("an unreachable gateway is a GatewayError", async () => {
  const err = await new Gateway("http://127.0.0.1:1", "t", { timeout: 2 }).toolCall("x").catch((e) => e);
  assert.ok(err instanceof GatewayError);
  assert.equal(err.httpStatus, null);
});

test("waitForApproval repeats the call with the approval id until it is allowed", async () => {
  let calls = 0;
  reply = (req) => {
    calls += 1;
    if (calls < 3) {
      return {
        status: 200,
        body: { jsonrpc: "2.0", id: req.body.id, error: { code: -32019, message: "approval required", data: { approval_id: "ap-7" } } },
      };
    }
    return ok(req, "approved");
  };
  seen.length = 0;
  const result = await new Gateway(url, "t").toolCall("transfer_funds", {}, { waitForApproval: 10 });
  assert.equal(result.text, "approved");
  assert.equal(seen[0].headers["x-approval-id"], undefined);
  assert.equal(seen[1].headers["x-approval-id"], "ap-7");
  assert.equal(seen[2].headers["x-approval-id"], "ap-7");
});

test("without waitForApproval, approval required is thrown at once", async () => {
  reply = (req) => ({
    status: 200,
    body: { jsonrpc: "2.0", id: req.body.id, error: { code: -32019, message: "approval required", data: { approval_id: "ap-8" } } },
  });
  const err = await new Gateway(url, "t").toolCall("x").catch((e) => e);
  assert.ok(err instanceof ApprovalRequired);
  assert.equal(err.approvalId, "ap-8");
});

test("httpToolCall posts to /v1/tool-call and maps status denials to typed errors", async () => {
  reply = (req) =>
    req.body.tool === "spend"
      ? { status: 429, body: { error: { code: -32013, message: "budget", data: { scope: "token:max_calls", limit: 1 } } } }
      : { status: 200, body: { echoed: req.body } };
  seen.length = 0;
  const gw = new Gateway(url, "t");
  assert.deepEqual(await gw.httpToolCall("read", { a: 1 }), { echoed: { tool: "read", arguments: { a: 1 } } });
  assert.equal(seen[0].path, "/v1/tool-call");
  const err = await gw.httpToolCall("spend").catch((e) => e);
  assert.ok(err instanceof BudgetError);
  assert.equal(err.limit, 1);
});
