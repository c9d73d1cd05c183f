export * from "./errors.js";
export * from "./tokens.js";
export * from "./approval.js";
export * from "./gateway.js";
export * from "./mcp.js";
export * from "./memory.js";
export * from "./exchange.js";
