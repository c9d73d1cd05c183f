// MemoryWriter against the shared vectors (tests/data/memory_vectors.json, written by the Python SDK's
// MemoryWriter): the same payload bytes and the same Ed25519 signatures, byte for byte.
import assert from "node:assert/strict";
import { createPublicKey, generateKeyPairSync, verify } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { MemoryWriter, contentSha256, signedPayload } from "../../dist/esm/index.js";

const vectors = JSON.parse(readFileSync(new URL("../../../../tests/data/memory_vectors.json", import.meta.url), "utf8"));
const seed = Buffer.from(vectors.private_key_seed_hex, "hex");
const writer = new MemoryWriter(seed, vectors.writer);

test("the vector file has cases, among them non-ASCII, control characters and bytes", () => {
  assert.ok(vectors.cases.length >= 5);
  assert.ok(vectors.cases.some((c) => c.content_base64 !== undefined));
  assert.equal(writer.publicKey.toString("hex"), vectors.public_key_hex);
});

for (const c of vectors.cases) {
  test(`sign matches the Python SDK: ${c.name}`, () => {
    const content = c.content_base64 !== undefined ? Buffer.from(c.content_base64, "base64") : c.content;
    const entry = writer.sign(c.entry_id, content, c.source, { writtenAt: c.written_at });
    assert.equal(signedPayload(entry).toString("utf8"), c.payload);
    assert.deepEqual(entry, c.expected);
    const key = createPublicKey({ key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), writer.publicKey]), format: "der", type: "spki" });
    assert.ok(verify(null, Buffer.from(c.payload, "utf8"), key, Buffer.from(entry.signature, "base64url")));
  });
}

test("keys as a KeyObject or PKCS#8 PEM sign alike; anything else is refused", () => {
  const { privateKey } = generateKeyPairSync("ed25519");
  const pem = privateKey.export({ format: "pem", type: "pkcs8" });
  const a = new MemoryWriter(privateKey, "w").sign("e", "c", "s", { writtenAt: "2026-01-01T00:00:00Z" });
  const b = new MemoryWriter(pem, "w").sign("e", "c", "s", { writtenAt: "2026-01-01T00:00:00Z" });
  assert.equal(a.signature, b.signature);
  assert.throws(() => new MemoryWriter(Buffer.alloc(31), "w"), /32-byte raw seed/);
  assert.throws(() => new MemoryWriter(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey, "w"), /not an Ed25519/);
  assert.throws(() => new MemoryWriter(seed, " "), /writerId/);
});

test("written_at defaults to now in whole seconds; a Date is written in UTC; content can ride along", () => {
  const before = Date.now();
  const entry = writer.sign("e-1", "hello", "erp", { includeContent: true });
  assert.match(entry.written_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.ok(Math.abs(Date.parse(entry.written_at) - before) < 5000);
  assert.equal(entry.content, "hello");
  assert.equal(entry.content_sha256, contentSha256(Buffer.from("hello")));
  const dated = writer.sign("e-2", "x", "erp", { writtenAt: new Date("2026-03-04T05:06:07.250+02:00") });
  assert.equal(dated.written_at, "2026-03-04T03:06:07.250000Z");
});

test("lone surrogates and non-string fields are refused, not signed", () => {
  assert.throws(() => writer.sign("e", "bad \ud800", "erp"), /lone surrogates/);
  assert.throws(() => writer.sign("e\udc00", "ok", "erp"), /lone surrogates/);
  assert.throws(() => writer.sign(7, "ok", "erp"), /must be a string/);
  assert.throws(() => writer.sign("e", Buffer.from([0xff]), "erp", { includeContent: true }));
});
