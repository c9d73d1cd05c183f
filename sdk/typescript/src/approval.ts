/** Approval waiting, shared by Gateway.toolCall and agents on the MCP SDK. */
import { ApprovalRequired, TesseraError } from "./errors.js";

/** Approval polling: first pause, growth factor and longest pause between two attempts (seconds). */
export const POLL_FIRST = 0.25;
export const POLL_FACTOR = 2;
export const POLL_MAX = 5;

/**
 * Repeat `attempt` while a human has not decided: the first attempt runs with `approvalId` (if any);
 * on ApprovalRequired it is repeated with the approval's id, pausing 0.25 s, then twice as long up to
 * 5 s (POLL_*), until it succeeds, fails otherwise, or `seconds` have passed (then the last ApprovalRequired is
 * thrown). For an MCP SDK client:
 *
 * ```ts
 * await waitForApproval((approvalId) => client.callTool({ name, arguments: args, _meta: tesseraMeta({ approvalId }) }), 60);
 * ```
 */
export async function waitForApproval<T>(
  attempt: (approvalId: string | undefined) => Promise<T>,
  seconds: number | undefined,
  approvalId?: string,
): Promise<T> {
  if (seconds !== undefined && !(typeof seconds === "number" && seconds >= 0)) {
    throw new Error("waitForApproval must be a number of seconds >= 0");
  }
  const deadline = seconds === undefined ? null : Date.now() + seconds * 1000;
  let delay = POLL_FIRST;
  let id = approvalId;
  for (;;) {
    try {
      return await attempt(id);
    } catch (exc) {
      const typed = exc instanceof TesseraError ? exc : null;
      if (!(typed instanceof ApprovalRequired) || deadline === null || !typed.approvalId) throw exc;
      const remaining = (deadline - Date.now()) / 1000;
      if (remaining <= 0) throw exc;
      id = typed.approvalId;
      await new Promise((resolve) => setTimeout(resolve, Math.min(delay, remaining) * 1000));
      delay = Math.min(delay * POLL_FACTOR, POLL_MAX);
    }
  }
}
