#!/usr/bin/env node
// Thin launcher: the CLI lives in dist/cli/main.js (built from src/ by `npm run build`, and by
// `prepare` when the package is packed or installed from a clone).
//
// The Node.js version is checked first, before anything is imported: an older Node fails only
// later and obscurely (Node 20: "p.buffer.transfer is not a function" at the first prompt). The
// supported releases are those of package.json "engines", which are those of @inquirer/prompts.
const supported = [[22, 22, 2], [24, 15, 0], [26, 0, 0]]; // [major, minor, patch]: that line from there on
const [major, minor, patch] = process.versions.node.split('.').map(Number);
const ok = supported.some(([M, m, p], i) =>
  (major === M || (i === supported.length - 1 && major > M)) && (major > M || minor > m || (minor === m && patch >= p)));
if (!ok) {
  process.stderr.write(`backupctl: needs Node.js 24 (24.15.0 or newer; also 22.22.2+ or 26+), but this is Node.js ${process.version} (${process.execPath}); put a newer node first on PATH (README "Installing")\n`);
  process.exit(1);
}
const { main } = await import('../dist/cli/main.js');
await main(process.argv);
