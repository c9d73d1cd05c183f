export * from "./errors.js";
export * from "./tokens.js";
export * from "./gateway.js";
