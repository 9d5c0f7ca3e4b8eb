#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/cli/main.js (built from src/ by `npm run build`, and by
// `prepare` when the package is packed or installed from a clone). The Node.js version is checked
// first; node-version.js imports nothing.
import { requireSupportedNode } from './node-version.js';

requireSupportedNode();
const { main } = await import('../dist/cli/main.js');
await main(process.argv);
