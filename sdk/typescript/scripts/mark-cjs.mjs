// dist/cjs holds CommonJS although the package is "type": "module": a nested package.json says so.
import { writeFileSync } from "node:fs";
writeFileSync(new URL("../dist/cjs/package.json", import.meta.url), '{ "type": "commonjs" }\n');
