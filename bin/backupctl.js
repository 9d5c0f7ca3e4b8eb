#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/cli/main.js (built from src/ by `npm run build`, and by
// `prepare` when the package is packed or installed from a clone). The Node.js version is checked
// first; node-version.js imports nothing.
import { requireSupportedNode } from './node-version.js';

requireSupportedNode();
// A backup syncs up to four packs at once, each holding a thread of libuv's pool (four unless set)
// for tens of ms, and the reads and file opens behind them waited. libuv reads this when the pool
// first starts, so before anything uses it.
process.env.UV_THREADPOOL_SIZE ??= '8';
const { main } = await import('../dist/cli/main.js');
await main(process.argv);
