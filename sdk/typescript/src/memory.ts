/**
 * Signing memory entries with a memory writer's own Ed25519 key, as the Python SDK's MemoryWriter does
 * (authz/client/_memory.py; tests/data/memory_vectors.json holds both to the same bytes).
 *
 * A memory writer (a RAG ingester, a vector-store loader) is registered with Tessera by its id and public
 * key; its private key never leaves it. Each entry it writes carries
 * `{id, content_sha256, source, written_at, writer, signature}`: `signature` is the Ed25519 signature,
 * base64url without padding, over the RFC 8785 (JCS) bytes of `{id, content_sha256, source, written_at,
 * writer}`. The agent presents the entries that shaped a call (`provenance` on Gateway calls, or
 * `tesseraMeta({ provenance })` with the MCP SDK).
 */
import { type KeyObject, createHash, createPrivateKey, createPublicKey, sign } from "node:crypto";
import { formatTime, isWellFormed } from "./tokens.js";

/** The signed fields, in the order they are documented (JCS sorts them anyway). */
export const SIGNED_FIELDS = ["id", "content_sha256", "source", "written_at", "writer"] as const;

export interface MemoryEntry {
  id: string;
  content_sha256: string;
  source: string;
  written_at: string;
  writer: string;
  /** Ed25519 over `signedPayload(entry)`, base64url without padding. */
  signature: string;
  /** Only with `includeContent`: Tessera then checks it against content_sha256. */
  content?: string;
  [key: string]: string | undefined;
}

export interface SignOptions {
  /** RFC 3339 text, or a Date (written in UTC); default now, to the second. */
  writtenAt?: string | Date;
  /** Keep the content in the entry. */
  includeContent?: boolean;
}

// PKCS#8 DER header of an Ed25519 private key (RFC 8410); the 32-byte seed follows it.
const ED25519_PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/**
 * The bytes a writer signs: RFC 8785 of the signed fields, all of which are strings. For five ASCII keys
 * and string values JCS is the keys sorted and JSON.stringify's string escapes; a lone surrogate cannot
 * be encoded and is refused, as the Python SDK refuses it.
 */
export function signedPayload(entry: Record<string, unknown>): Buffer {
  const fields = [...SIGNED_FIELDS].sort().map((name) => {
    const value = entry[name];
    if (typeof value !== "string") throw new TypeError(`memory entry field '${name}' must be a string`);
    if (!isWellFormed(value)) throw new Error("memory entry fields must be valid Unicode (no lone surrogates)");
    return `${JSON.stringify(name)}:${JSON.stringify(value)}`;
  });
  return Buffer.from(`{${fields.join(",")}}`, "utf8");
}

/** Hex SHA-256 of the content (UTF-8 for a string). */
export function contentSha256(content: string | Uint8Array): string {
  if (typeof content === "string") {
    if (!isWellFormed(content)) throw new Error("memory content must be valid Unicode (no lone surrogates)");
    return createHash("sha256").update(content, "utf8").digest("hex");
  }
  if (!(content instanceof Uint8Array)) throw new TypeError("memory content must be a string or bytes");
  return createHash("sha256").update(content).digest("hex");
}

function loadPrivateKey(privateKey: KeyObject | Uint8Array | string): KeyObject {
  let key: KeyObject;
  if (typeof privateKey === "object" && "asymmetricKeyType" in privateKey) {
    key = privateKey;
  } else if (privateKey instanceof Uint8Array && privateKey.length === 32) {
    key = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, privateKey]), format: "der", type: "pkcs8" });
  } else if (
    (typeof privateKey === "string" || privateKey instanceof Uint8Array) &&
    Buffer.from(privateKey).includes("-----BEGIN")
  ) {
    key = createPrivateKey({ key: Buffer.from(privateKey), format: "pem" });
  } else {
    throw new TypeError("privateKey must be an Ed25519 KeyObject, its 32-byte raw seed, or an unencrypted PKCS#8 PEM");
  }
  if (key.type !== "private" || key.asymmetricKeyType !== "ed25519") {
    throw new TypeError("privateKey is not an Ed25519 private key");
  }
  return key;
}

/**
 * Signs memory entries as the registered writer `writerId`:
 *
 * ```ts
 * const writer = new MemoryWriter(privateKey, "rag-ingester");
 * const entry = writer.sign("doc-17", "Pay ACME to IBAN DE89 3704 ...", "erp");
 * await gateway.toolCall("transfer_funds", args, { provenance: [entry] });
 * ```
 */
export class MemoryWriter {
  readonly writerId: string;
  private readonly key: KeyObject;

  /** `privateKey`: an Ed25519 KeyObject, its 32-byte raw seed, or an unencrypted PKCS#8 PEM. */
  constructor(privateKey: KeyObject | Uint8Array | string, writerId: string) {
    if (typeof writerId !== "string" || !writerId.trim()) throw new Error("writerId must be a non-empty string");
    this.key = loadPrivateKey(privateKey);
    this.writerId = writerId;
  }

  /** The raw 32-byte public key, as registered with Tessera (admin API MemoryWriterService). */
  get publicKey(): Buffer {
    const spki = createPublicKey(this.key).export({ format: "der", type: "spki" });
    return spki.subarray(spki.length - 32);
  }

  /** One signed entry for `content` (a string, signed as UTF-8, or bytes) from `source`. */
  sign(entryId: string, content: string | Uint8Array, source: string, options: SignOptions = {}): MemoryEntry {
    const writtenAt = options.writtenAt ?? formatTime(new Date(Math.floor(Date.now() / 1000) * 1000));
    const entry: MemoryEntry = {
      id: entryId,
      content_sha256: contentSha256(content),
      source,
      written_at: writtenAt instanceof Date ? formatTime(writtenAt) : writtenAt,
      writer: this.writerId,
      signature: "",
    };
    entry.signature = sign(null, signedPayload(entry), this.key).toString("base64url");
    if (options.includeContent) {
      entry.content = typeof content === "string" ? content : new TextDecoder("utf-8", { fatal: true }).decode(content);
    }
    return entry;
  }
}
