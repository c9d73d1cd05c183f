import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { attenuate, formatTime, inspect, pythonJson } from "../../dist/esm/index.js";

const { cases } = JSON.parse(
  readFileSync(new URL("../../../../tests/data/token_vectors.json", import.meta.url), "utf8"),
);
const root = cases.find((c) => c.name === "tools only").token;
const everything = cases.find((c) => c.name === "everything").expected;

test("inspect reads the identifier, location and caveats", () => {
  const info = inspect(root);
  assert.equal(info.tenant, "demo");
  assert.equal(info.kid, "k1");
  assert.equal(info.jti, "j1");
  assert.equal(info.version, 1);
  assert.equal(info.location, "tessera");
  assert.deepEqual(info.caveats, []);
  assert.equal(info.tools, null);
  assert.match(info.tokenId, /^[0-9a-f]{64}$/);
});

test("inspect summarises the narrowest limits", () => {
  const info = inspect(everything);
  assert.deepEqual([...info.tools].sort(), ["a", "b"]);
  assert.equal(info.maxCalls, 5);
  assert.equal(info.maxCost, "0.000001");
  assert.equal(info.agent, "agent-9");
  assert.equal(info.expires.toISOString(), "2029-06-01T01:00:00.001Z");
  assert.equal(info.notBefore.toISOString(), "2029-06-01T00:00:00.000Z");
  assert.equal(info.promptSha256, createHash("sha256").update("pay the rent").digest("hex"));
  assert.deepEqual(info.args, ["arg:amount < 2000", 'arg:iban = "DE89370400440532013000"']);
  assert.deepEqual(info.problems, []);
});

test("the signature chains as HMAC-SHA256 keyed by the previous signature", () => {
  const out = attenuate(root, { tools: ["read_invoice"] });
  const sig = (token) => Buffer.from(token, "base64url").subarray(-32);
  const expected = createHmac("sha256", sig(root)).update("tools = read_invoice").digest();
  assert.deepEqual(sig(out), expected);
  assert.equal(inspect(out).tokenId, createHash("sha256").update(expected).digest("hex"));
});

test("inspect reports caveats the gateway would refuse", () => {
  const out = attenuate(root, { caveats: ["max_calls = 2"] });
  // a foreign tenant appended by hand: attenuate refuses it, inspect flags a token that carries it
  assert.throws(() => attenuate(out, { caveats: ["tenant = other"] }), /does not match the token's tenant/);
});

test("attenuate refuses malformed restrictions instead of minting a token the gateway rejects", () => {
  assert.throws(() => attenuate(root, {}), /at least one restriction/);
  assert.throws(() => attenuate(root, { tools: [] }), /non-empty/);
  assert.throws(() => attenuate(root, { tools: ["a b"] }), /invalid tool name/);
  assert.throws(() => attenuate(root, { maxCalls: 1.5 }), /maxCalls/);
  assert.throws(() => attenuate(root, { maxCost: 0.1 }), /floats round/);
  assert.throws(() => attenuate(root, { caveats: ["colour = red"] }), /unknown caveat/);
  assert.throws(() => attenuate(root, { caveats: ["max_cost = 1.1234567"] }), /6 fractional digits/);
  assert.throws(() => attenuate(root, { args: ["amount ~ 3"] }), /unknown operator/);
  assert.throws(() => attenuate(root, { args: ["amount <= lots"] }), /needs a number/);
  assert.throws(() => attenuate(root, { args: ["amount <= 1e999"] }), /finite/);
  assert.throws(() => attenuate(root, { args: ['currency in {"a":1}'] }), /takes a list/);
  assert.ok(attenuate(root, { args: ["amount <= 1000.5", "currency in EUR,USD", 'to in ["a","b"]'] }));
  assert.throws(() => attenuate(root, { caveats: ["agent = a\nb"] }), /control characters/);
  const bound = attenuate(root, { agent: "a1" });
  assert.throws(() => attenuate(bound, { agent: "a2" }), /conflicting agent caveats/);
});

test("argument values are written as the Python SDK writes them, or refused", () => {
  assert.equal(pythonJson({ a: [1, 1.5, -0, 1e-7, 1e16, 10n ** 20n], s: "Müller \"&\" \n", ok: true, no: null }),
    '{"a":[1,1.5,0,1e-07,1e+16,100000000000000000000],"s":"Müller \\"&\\" \\n","ok":true,"no":null}');
  const caveats = inspect(attenuate(root, { args: { rate: 0.25, whole: 3, tiny: 0.00001 } })).caveats;
  assert.deepEqual(caveats.slice(-3), ["arg:rate = 0.25", "arg:whole = 3", "arg:tiny = 1e-05"]);
  assert.throws(() => attenuate(root, { args: { x: [1, NaN] } }), /finite/);
  assert.throws(() => attenuate(root, { args: { x: { y: Infinity } } }), /finite/);
  assert.throws(() => attenuate(root, { args: { x: new Date(0) } }), /JSON values/);
  assert.throws(() => attenuate(root, { args: { x: undefined } }), /JSON values/);
  assert.throws(() => attenuate(root, { args: { x: [1, , 2] } }), /JSON values/);
});

test("inspect refuses what is not a Tessera token", () => {
  assert.throws(() => inspect(""), /not a Tessera token/);
  assert.throws(() => inspect("not base64!"), /not a Tessera token/);
  assert.throws(() => inspect(Buffer.from([1, 2, 3]).toString("base64url")), /V2 binary/);
  assert.throws(() => inspect(root.slice(0, -10)), /not a Tessera token/);
});

test("formatTime writes RFC 3339 UTC as the Python SDK does", () => {
  assert.equal(formatTime(new Date("2030-01-02T03:04:05Z")), "2030-01-02T03:04:05Z");
  assert.equal(formatTime(new Date("2030-01-02T03:04:05.250Z")), "2030-01-02T03:04:05.250000Z");
  const soon = Date.parse(formatTime(60));
  assert.ok(Math.abs(soon - Date.now() - 60_000) < 5_000);
});

test("attenuate writes the MCP prompts, resources and servers caveats as the Python SDK does", () => {
  const out = attenuate(root, { prompts: ["summary"], resources: ["file:///public/"], servers: ["billing"] });
  assert.deepEqual(inspect(out).caveats, [
    "prompts = summary",
    "resources = file:///public/",
    "servers = billing",
  ]);
  assert.deepEqual(inspect(out).problems, []);
  assert.throws(() => attenuate(root, { servers: ["Billing"] }), /invalid servers item/);
  assert.throws(() => attenuate(root, { prompts: [] }), /non-empty/);
  assert.throws(() => attenuate(root, { resources: ["a b"] }), /invalid resources item/);
});
