/**
 * Offline delegation: narrow a capability token for a sub-agent, and read what a token allows.
 *
 * Tokens are macaroons (V2 binary, base64url without padding). Anyone holding one can append
 * first-party caveats without a key: the new signature is HMAC-SHA256 keyed by the old one over the
 * caveat text, exactly as pymacaroons chains it, so `attenuate` here yields the same bytes as the Python
 * SDK's `attenuate()` for the same inputs (tests/data/token_vectors.json holds both to that).
 */
import { createHash, createHmac } from "node:crypto";

export const MAX_CAVEATS = 64;
export const MAX_TOKEN_LENGTH = 8192;
export const MAX_CAVEAT_LENGTH = 1024;
export const ARG_OPERATORS = ["=", "!=", "<", "<=", ">", ">=", "in"] as const;

const OPERATOR_OF: Record<string, string> = {
  tenant: "=",
  agent: "=",
  tools: "=",
  prompts: "=",
  resources: "=",
  servers: "=",
  expires: "<",
  not_before: ">",
  max_calls: "=",
  max_cost: "=",
  prompt_sha256: "=",
};
const CONTROL_RE = /[\x00-\x1f\x7f]/;
const NAME_RE = /^[^\s|,\x00-\x1f\x7f]{1,128}$/u;
const AGENT_RE = /^\S{1,256}$/u;
const TOOL_RE = /^[^\s,]{1,128}$/u;
const PREFIX_RE = /^[^\s,]{1,512}$/u;
const SERVER_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;
const CALLS_RE = /^(?:0|[1-9][0-9]{0,18})$/;
const COST_RE = /^(?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,6})?$/;
const SHA256_RE = /^[0-9a-fA-F]{64}$/;
const ARG_PATH_RE = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;
const B64URL_RE = /^[A-Za-z0-9_-]*={0,2}$/;
const RFC3339_RE = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})$/;

// V2 binary field types (the libmacaroons format pymacaroons writes)
const EOS = 0;
const LOCATION = 1;
const IDENTIFIER = 2;
const VID = 4;
const SIGNATURE = 6;

interface Caveat {
  location: Buffer | null;
  id: Buffer;
  vid: Buffer | null;
}

interface Macaroon {
  location: Buffer | null;
  identifier: Buffer;
  caveats: Caveat[];
  signature: Buffer;
}

class Reader {
  private pos = 0;
  constructor(private readonly data: Buffer) {}

  varint(): number {
    let value = 0;
    let shift = 0;
    for (;;) {
      const byte = this.data[this.pos++];
      if (byte === undefined || shift > 28) throw new Error("truncated or oversized varint");
      value += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return value;
      shift += 7;
    }
  }

  /** The next field: [type, bytes]; type EOS has no bytes. */
  field(): [number, Buffer] {
    const type = this.varint();
    if (type === EOS) return [EOS, Buffer.alloc(0)];
    const length = this.varint();
    if (this.pos + length > this.data.length) throw new Error("truncated field");
    const value = this.data.subarray(this.pos, this.pos + length);
    this.pos += length;
    return [type, value];
  }

  get done(): boolean {
    return this.pos >= this.data.length;
  }
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

function field(type: number, value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([...varint(type), ...varint(value.length)]), value]);
}

function deserialize(data: Buffer): Macaroon {
  if (data[0] !== 2) throw new Error("not a V2 binary macaroon");
  const r = new Reader(data.subarray(1));
  let [type, value] = r.field();
  let location: Buffer | null = null;
  if (type === LOCATION) {
    location = value;
    [type, value] = r.field();
  }
  if (type !== IDENTIFIER) throw new Error("identifier missing");
  const identifier = value;
  if (r.field()[0] !== EOS) throw new Error("unexpected field in the header");
  const caveats: Caveat[] = [];
  for (;;) {
    [type, value] = r.field();
    if (type === EOS) break;
    const caveat: Caveat = { location: null, id: Buffer.alloc(0), vid: null };
    if (type === LOCATION) {
      caveat.location = value;
      [type, value] = r.field();
    }
    if (type !== IDENTIFIER) throw new Error("caveat identifier missing");
    caveat.id = value;
    [type, value] = r.field();
    if (type === VID) {
      caveat.vid = value;
      [type, value] = r.field();
    }
    if (type !== EOS) throw new Error("unexpected field in a caveat");
    caveats.push(caveat);
  }
  [type, value] = r.field();
  if (type !== SIGNATURE || value.length !== 32 || !r.done) throw new Error("bad signature field");
  return { location, identifier, caveats, signature: value };
}

function serialize(m: Macaroon): Buffer {
  const parts: Buffer[] = [Buffer.from([2])];
  // pymacaroons reads a missing location as "" and always writes the field back, empty or not
  parts.push(field(LOCATION, m.location ?? Buffer.alloc(0)), field(IDENTIFIER, m.identifier), Buffer.from([EOS]));
  for (const c of m.caveats) {
    if (c.location !== null) parts.push(field(LOCATION, c.location));
    parts.push(field(IDENTIFIER, c.id));
    if (c.vid !== null) parts.push(field(VID, c.vid));
    parts.push(Buffer.from([EOS]));
  }
  parts.push(Buffer.from([EOS]), field(SIGNATURE, m.signature));
  return Buffer.concat(parts);
}

function decode(token: string): Macaroon {
  if (typeof token !== "string") throw new TypeError("token must be a string");
  const text = token.trim();
  if (!text || text.length > MAX_TOKEN_LENGTH || !B64URL_RE.test(text)) {
    throw new Error("not a Tessera token: expected base64url text of at most 8192 characters");
  }
  const data = Buffer.from(text.replace(/=+$/, ""), "base64url");
  if (data.length === 0 || data[0] !== 2) throw new Error("not a Tessera token: not a V2 binary macaroon");
  try {
    return deserialize(data);
  } catch (exc) {
    throw new Error(`not a Tessera token: ${(exc as Error).message}`);
  }
}

function encode(m: Macaroon): string {
  return serialize(m).toString("base64url");
}

interface Identifier {
  v: unknown;
  tenant: unknown;
  kid: unknown;
  jti: unknown;
}

function identifierOf(m: Macaroon): Identifier {
  let ident: unknown;
  try {
    ident = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(m.identifier));
  } catch {
    throw new Error("not a Tessera token: its identifier is not JSON");
  }
  if (typeof ident !== "object" || ident === null || !["v", "tenant", "kid", "jti"].every((k) => k in ident)) {
    throw new Error("not a Tessera token: its identifier lacks v, tenant, kid or jti");
  }
  return ident as Identifier;
}

function caveatTexts(m: Macaroon): string[] {
  return m.caveats.map((c) => {
    if (c.vid !== null) throw new Error("third-party caveats are not supported by Tessera");
    return c.id.toString("utf8");
  });
}

/** `[key, value]` of one caveat (key "arg" for argument caveats); throws on anything the gateway refuses. */
function parseCaveat(text: string): [string, unknown] {
  if (Buffer.byteLength(text, "utf8") > MAX_CAVEAT_LENGTH) {
    throw new Error(`caveat ${JSON.stringify(text.slice(0, 60))}... is longer than ${MAX_CAVEAT_LENGTH} bytes`);
  }
  if (CONTROL_RE.test(text)) throw new Error(`caveat ${JSON.stringify(text)} contains control characters`);
  if (!isWellFormed(text)) {
    throw new Error(`caveat ${JSON.stringify(text)} is not encodable as UTF-8`);
  }
  const bad = (why: string) => new Error(`malformed caveat ${JSON.stringify(text)}: ${why}`);
  if (text.startsWith("arg:")) {
    const parts = splitN(text.slice(4), " ", 3);
    if (parts.length !== 3) throw bad("expected 'arg:<name> <op> <value>'");
    const [name, op, value] = parts as [string, string, string];
    if (!ARG_PATH_RE.test(name)) throw bad("argument name must be dotted segments of [A-Za-z0-9_-]");
    if (!(ARG_OPERATORS as readonly string[]).includes(op)) throw bad(`unknown operator '${op}'`);
    if (!value || value !== value.trim()) throw bad("empty value or surrounding whitespace");
    const parsed = jsonValue(value);
    if (parsed !== NOT_JSON && !finite(parsed)) throw bad("numbers must be finite");
    if (op === "in" && parsed !== null && typeof parsed === "object" && !Array.isArray(parsed)) {
      throw bad("'in' takes a list, not an object");
    }
    if (["<", "<=", ">", ">="].includes(op) && typeof parsed !== "number") throw bad(`operator '${op}' needs a number`);
    return ["arg", [name, op, value]];
  }
  const parts = splitN(text, " ", 3);
  const key = parts[0] ?? "";
  if (!(key in OPERATOR_OF)) throw new Error(`unknown caveat ${JSON.stringify(text)}`);
  if (parts.length !== 3 || parts[1] !== OPERATOR_OF[key]) {
    throw bad(`expected '${key} ${OPERATOR_OF[key]} <value>'`);
  }
  const value = parts[2] as string;
  if (!value || value !== value.trim()) throw bad("empty value or surrounding whitespace");
  switch (key) {
    case "tenant":
      if (!NAME_RE.test(value)) throw bad("invalid tenant id");
      return [key, value];
    case "agent":
      if (!AGENT_RE.test(value)) throw bad("invalid agent id");
      return [key, value];
    case "tools": {
      const names = value.split(",").map((n) => n.replace(/^ +/, ""));
      if (!names.every((n) => TOOL_RE.test(n))) throw bad("invalid tool name");
      return [key, new Set(names)];
    }
    case "prompts":
    case "resources":
    case "servers": {
      // MCP items: prompt names, resource URI prefixes, tool server names (docs/caveats.md)
      const pattern = key === "prompts" ? TOOL_RE : key === "resources" ? PREFIX_RE : SERVER_RE;
      const names = value.split(",").map((n) => n.replace(/^ +/, ""));
      if (!names.every((n) => pattern.test(n))) throw bad(`invalid ${key} item`);
      return [key, new Set(names)];
    }
    case "expires":
    case "not_before": {
      const date = new Date(value);
      if (!RFC3339_RE.test(value) || Number.isNaN(date.getTime())) {
        throw bad("expected an RFC 3339 time with 'Z' or an offset");
      }
      return [key, date];
    }
    case "max_calls":
      if (!CALLS_RE.test(value) || BigInt(value) > 2n ** 63n - 1n) {
        throw bad("expected an integer between 0 and 2**63-1");
      }
      return [key, Number(value)];
    case "max_cost":
      if (!COST_RE.test(value)) throw bad("expected a decimal with at most 6 fractional digits");
      return [key, value];
    default: // prompt_sha256
      if (!SHA256_RE.test(value)) throw bad("expected 64 hex digits");
      return [key, value.toLowerCase()];
  }
}

const NOT_JSON = Symbol("not JSON");
const JSON_START = new Set('-0123456789tfn"[{');

/** The JSON value a caveat's text spells, or NOT_JSON (the gateway then reads it as a plain string). */
function jsonValue(text: string): unknown {
  if (!JSON_START.has(text[0] ?? "")) return NOT_JSON;
  try {
    return JSON.parse(text);
  } catch {
    return NOT_JSON;
  }
}

function finite(value: unknown): boolean {
  if (typeof value === "number") return Number.isFinite(value);
  if (Array.isArray(value)) return value.every(finite);
  if (value !== null && typeof value === "object") return Object.values(value).every(finite);
  return true;
}

/** True when `text` has no lone surrogate (it round-trips through UTF-8), as Python requires to encode it. */
export function isWellFormed(text: string): boolean {
  return Buffer.from(text, "utf8").toString("utf8") === text;
}

/** Python's str.split(sep, n - 1): at most n parts, the last keeps the rest. */
function splitN(text: string, sep: string, n: number): string[] {
  const parts = text.split(sep);
  return parts.length <= n ? parts : [...parts.slice(0, n - 1), parts.slice(n - 1).join(sep)];
}

/** RFC 3339 UTC as the Python SDK writes it: microseconds only when non-zero, then "Z". */
export function formatTime(moment: Date | number): string {
  const date = typeof moment === "number" ? new Date(Date.now() + moment * 1000) : moment;
  if (!(date instanceof Date) || Number.isNaN(date.getTime())) {
    throw new Error("times must be a Date (or a number of seconds from now)");
  }
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.mmmZ
  const ms = date.getUTCMilliseconds();
  return iso.slice(0, 19) + (ms ? `.${String(ms * 1000).padStart(6, "0")}` : "") + "Z";
}

/** What a token says about itself, read offline and unverified (only the gateway can check the signature). */
export interface TokenInfo {
  tenant: string;
  kid: string;
  jti: string;
  version: number;
  location: string;
  /** The id revocations by token use: SHA-256 hex of the raw signature. */
  tokenId: string;
  caveats: string[];
  agent: string | null;
  /** The intersection of every tools caveat (null: any tool). */
  tools: Set<string> | null;
  expires: Date | null;
  notBefore: Date | null;
  maxCalls: number | null;
  /** The smallest max_cost, as its decimal text. */
  maxCost: string | null;
  args: string[];
  promptSha256: string | null;
  /** What makes the gateway reject the token outright (unknown or malformed caveats, foreign tenant...). */
  problems: string[];
}

/** Decode `token` offline; throws if it is not a Tessera token at all. */
export function inspect(token: string): TokenInfo {
  const m = decode(token);
  const ident = identifierOf(m);
  const texts = caveatTexts(m);
  const info: TokenInfo = {
    tenant: String(ident.tenant),
    kid: String(ident.kid),
    jti: String(ident.jti),
    version: typeof ident.v === "number" && Number.isInteger(ident.v) ? ident.v : 0,
    location: m.location?.toString("utf8") ?? "",
    tokenId: createHash("sha256").update(m.signature).digest("hex"),
    caveats: texts,
    agent: null,
    tools: null,
    expires: null,
    notBefore: null,
    maxCalls: null,
    maxCost: null,
    args: [],
    promptSha256: null,
    problems: [],
  };
  for (const text of texts) {
    let key: string;
    let value: unknown;
    try {
      [key, value] = parseCaveat(text);
    } catch (exc) {
      info.problems.push((exc as Error).message);
      continue;
    }
    if (key === "tenant" && value !== info.tenant) {
      info.problems.push(`caveat '${text}' does not match the token's tenant '${info.tenant}'`);
    } else if (key === "agent") {
      if (info.agent !== null && value !== info.agent) {
        info.problems.push(`conflicting agent caveats: '${info.agent}' and '${String(value)}'`);
      }
      info.agent ??= value as string;
    } else if (key === "tools") {
      const names = value as Set<string>;
      info.tools = info.tools === null ? names : new Set([...info.tools].filter((t) => names.has(t)));
    } else if (key === "expires") {
      const d = value as Date;
      if (info.expires === null || d < info.expires) info.expires = d;
    } else if (key === "not_before") {
      const d = value as Date;
      if (info.notBefore === null || d > info.notBefore) info.notBefore = d;
    } else if (key === "max_calls") {
      info.maxCalls = info.maxCalls === null ? (value as number) : Math.min(info.maxCalls, value as number);
    } else if (key === "max_cost") {
      if (info.maxCost === null || Number(value) < Number(info.maxCost)) info.maxCost = value as string;
    } else if (key === "arg") {
      info.args.push(text);
    } else if (key === "prompt_sha256") {
      info.promptSha256 = value as string;
    }
  }
  return info;
}

export interface AttenuateOptions {
  /** Only these tools (intersected with any earlier tools caveat). */
  tools?: string[];
  /** A Date, or a number of seconds from now. */
  expires?: Date | number;
  notBefore?: Date | number;
  /** A budget of its own, counted on top of the parent's. */
  maxCalls?: number;
  /** An integer or a decimal string (not a float: floats round). */
  maxCost?: number | string | bigint;
  /** Constraint strings ("amount <= 1000") or an object of exact values ({invoice_id: "INV-1001"}). */
  args?: string[] | Record<string, unknown>;
  /** Bind the token to this one user request (its SHA-256). */
  prompt?: string;
  /** Bind an unbound token to one agent id. */
  agent?: string;
  /** MCP: only these prompts; only resources whose URI starts with one of these prefixes; only these
   * tool servers (`/v1/mcp/<name>`, `default` for `/v1/mcp`). Each intersects with earlier ones. */
  prompts?: string[];
  resources?: string[];
  servers?: string[];
  /** Raw caveat strings, appended last. */
  caveats?: string[];
}

/**
 * A narrower token for a sub-agent, made offline (no key, no network). Caveats are appended in the
 * Python SDK's order (agent, tools, prompts, resources, servers, not_before, expires, max_calls, max_cost,
 * prompt, args, caveats) and each is checked against the gateway's grammar first, so a typo throws here
 * instead of producing a token the gateway would refuse.
 */
export function attenuate(token: string, options: AttenuateOptions): string {
  const m = decode(token);
  const ident = identifierOf(m);
  const existing = caveatTexts(m);
  const added: string[] = [];
  if (options.agent !== undefined) added.push(`agent = ${options.agent}`);
  if (options.tools !== undefined) {
    const tools = options.tools;
    if (!Array.isArray(tools) || tools.length === 0 || !tools.every((t) => typeof t === "string")) {
      throw new Error("tools must be a non-empty array of tool names");
    }
    const badTool = tools.find((t) => !TOOL_RE.test(t));
    if (badTool !== undefined) {
      throw new Error(`invalid tool name '${badTool}' (1-128 characters, no whitespace or comma)`);
    }
    added.push(`tools = ${tools.join(",")}`);
  }
  for (const key of ["prompts", "resources", "servers"] as const) {
    const names = options[key];
    if (names === undefined) continue;
    if (!Array.isArray(names) || names.length === 0 || !names.every((n) => typeof n === "string")) {
      throw new Error(`${key} must be a non-empty array of strings`);
    }
    added.push(`${key} = ${names.join(",")}`); // checked against the grammar below
  }
  if (options.notBefore !== undefined) added.push(`not_before > ${formatTime(options.notBefore)}`);
  if (options.expires !== undefined) added.push(`expires < ${formatTime(options.expires)}`);
  if (options.maxCalls !== undefined) {
    if (!Number.isSafeInteger(options.maxCalls)) throw new Error("maxCalls must be an integer");
    added.push(`max_calls = ${options.maxCalls}`);
  }
  if (options.maxCost !== undefined) {
    const cost = options.maxCost;
    if (typeof cost === "number" && !Number.isSafeInteger(cost)) {
      throw new Error("maxCost must be an integer or a decimal string (floats round)");
    }
    added.push(`max_cost = ${String(cost)}`);
  }
  if (options.prompt !== undefined) {
    added.push(`prompt_sha256 = ${createHash("sha256").update(options.prompt, "utf8").digest("hex")}`);
  }
  added.push(...argCaveats(options.args ?? []));
  const raw = options.caveats ?? [];
  if (!Array.isArray(raw) || !raw.every((c) => typeof c === "string")) {
    throw new Error("caveats must be an array of caveat strings");
  }
  added.push(...raw);
  if (added.length === 0) throw new Error("attenuate needs at least one restriction");
  const agents = new Set<unknown>();
  const fresh = new Set(added);
  for (const text of [...existing, ...added]) {
    let key: string;
    let value: unknown;
    try {
      [key, value] = parseCaveat(text);
    } catch (exc) {
      if (fresh.has(text)) throw exc;
      continue; // an existing bad caveat already invalidates the token; appending cannot hurt
    }
    if (key === "tenant" && value !== ident.tenant) {
      throw new Error(`caveat '${text}' does not match the token's tenant '${String(ident.tenant)}'`);
    }
    if (key === "agent") agents.add(value);
  }
  if (agents.size > 1) throw new Error(`conflicting agent caveats: ${[...agents].sort().join(", ")}`);
  if (existing.length + added.length > MAX_CAVEATS) throw new Error(`a token holds at most ${MAX_CAVEATS} caveats`);
  let signature = m.signature;
  for (const text of added) {
    const id = Buffer.from(text, "utf8");
    signature = createHmac("sha256", signature).update(id).digest();
    m.caveats.push({ location: null, id, vid: null });
  }
  m.signature = signature;
  const result = encode(m);
  if (result.length > MAX_TOKEN_LENGTH) throw new Error(`the token would exceed ${MAX_TOKEN_LENGTH} characters`);
  return result;
}

function argCaveats(args: string[] | Record<string, unknown>): string[] {
  if (Array.isArray(args)) {
    if (!args.every((a) => typeof a === "string")) {
      throw new Error('args must be caveat strings such as "amount <= 1000", or an object of values');
    }
    return args.map((a) => (a.startsWith("arg:") ? a : `arg:${a}`));
  }
  return Object.entries(args).map(([name, value]) => `arg:${name} = ${pythonJson(value)}`);
}

/**
 * JSON as the Python SDK writes an argument value: json.dumps(..., ensure_ascii=False,
 * separators=(",", ":")) after it turned integral floats within +-(2**53 - 1) into ints. A JavaScript
 * number cannot tell 1.0 from 1, so both SDKs write `1` (the gateway compares numbers by value);
 * every other number is written as Python's float repr (`0.1`, `1e-07`, `1e+16`, `9007199254740992.0`).
 * A bigint is written exactly, like a Python int.
 */
export function pythonJson(value: unknown): string {
  if (value === null) return "null";
  switch (typeof value) {
    case "boolean":
      return value ? "true" : "false";
    case "string":
      return JSON.stringify(value); // escapes exactly what ensure_ascii=False escapes
    case "bigint":
      return value.toString();
    case "number":
      return pythonNumber(value);
    case "object": {
      if (Array.isArray(value)) return `[${Array.from(value, pythonJson).join(",")}]`;
      const proto: unknown = Object.getPrototypeOf(value);
      if (proto === Object.prototype || proto === null) {
        const items = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}:${pythonJson(v)}`);
        return `{${items.join(",")}}`;
      }
    }
  }
  throw new Error("argument values must be JSON values: string, number, bigint, boolean, null, array or plain object");
}

/** A number as the Python SDK writes it (see pythonJson): a safe integer as an int, else float repr. */
function pythonNumber(x: number): string {
  if (!Number.isFinite(x)) throw new Error("argument values must be finite numbers");
  if (Number.isSafeInteger(x)) return String(x); // -0 too: String(-0) is "0", like int(-0.0)
  // toExponential() without digits gives the shortest digits that round-trip, as Python's repr does;
  // repr writes them in fixed notation for decimal exponents -4..15 and as d.ddde+XX otherwise.
  const [mantissa = "", expText = "0"] = x.toExponential().split("e");
  const exp = Number(expText);
  const sign = mantissa.startsWith("-") ? "-" : "";
  const digits = mantissa.replace("-", "").replace(".", "");
  if (exp >= -4 && exp < 16) {
    if (exp < 0) return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
    const whole = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
    return `${sign}${whole}.${digits.slice(exp + 1) || "0"}`;
  }
  const lead = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${lead}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
}
