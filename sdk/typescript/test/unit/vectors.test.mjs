// The shared attenuation vectors: the TypeScript SDK's attenuate() must equal the Python SDK's output
// byte for byte (tests/unit/test_token_vectors.py holds the Python side to the same file).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { attenuate, inspect } from "../../dist/esm/index.js";

const file = new URL("../../../../tests/data/token_vectors.json", import.meta.url);
const { cases } = JSON.parse(readFileSync(file, "utf8"));

function tsOptions(options) {
  const out = {};
  for (const [key, value] of Object.entries(options)) {
    const name = key.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
    out[name] = name === "expires" || name === "notBefore" ? new Date(value) : value;
  }
  return out;
}

test("the vector file has cases", () => {
  assert.ok(cases.length >= 10);
});

for (const c of cases) {
  test(`attenuate matches the Python SDK: ${c.name}`, () => {
    const out = attenuate(c.token, tsOptions(c.options));
    assert.equal(out, c.expected);
    const before = inspect(c.token);
    const after = inspect(out);
    assert.deepEqual(after.caveats.slice(0, before.caveats.length), before.caveats);
    assert.deepEqual(after.problems, []);
  });
}
