#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/cli/main.js (built from src/ by `npm run build`).
import { main } from '../dist/cli/main.js';
await main(process.argv);
