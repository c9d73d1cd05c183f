/**
 * What every request the SDK sends shares (internal: not exported from the package index), so the
 * gateway client and the token exchange read Retry-After and report an unreachable gateway alike.
 */
import { GatewayError } from "./errors.js";

/** Retry-After in seconds (null when absent or not a number of seconds). */
export function retryAfter(headers: Headers): number | null {
  const value = headers.get("retry-after");
  if (value === null) return null;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds : null;
}

/** A request that never got an answer (refused connection, DNS, timeout) as the SDK's GatewayError. */
export function transportError(exc: unknown, url: string): GatewayError {
  let detail = exc instanceof Error ? `${exc.name}: ${exc.message}` : String(exc);
  // Node's fetch says only "fetch failed"; the reason (e.g. ECONNREFUSED) is in its cause.
  const cause = exc instanceof Error ? exc.cause : undefined;
  if (cause instanceof Error && cause.message && !detail.includes(cause.message)) detail += ` (${cause.message})`;
  return new GatewayError(`cannot reach the gateway at ${url}: ${detail}`, { cause: exc });
}
