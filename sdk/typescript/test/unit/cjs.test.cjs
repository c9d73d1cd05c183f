// The CommonJS build loads through the package's exports map and has the same classes.
const assert = require("node:assert/strict");
const { test } = require("node:test");

test("require() gets the CommonJS build", () => {
  const sdk = require("tessera-authz");
  assert.equal(typeof sdk.Gateway, "function");
  assert.equal(typeof sdk.attenuate, "function");
  assert.equal(typeof sdk.exchangeToken, "function");
  assert.equal(sdk.TOKEN_PATH, "/v1/oauth/token");
  assert.ok(sdk.errorFromRpc({ code: -32013, message: "m" }) instanceof sdk.BudgetError);
  assert.match(require.resolve("tessera-authz"), /dist[\\/]cjs[\\/]index\.js$/);
});
