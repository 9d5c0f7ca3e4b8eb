// The Node.js releases backupctl runs on, checked before anything else is imported: an older
// Node fails only later and obscurely (Node 20: "p.buffer.transfer is not a function" at the
// first prompt). The range is package.json "engines" (test/e2e/install.test.ts keeps them equal),
// which is @inquirer/prompts' own: the strictest of the dependencies.
export const ENGINES = '^22.22.2 || ^24.15.0 || >=26.0.0';

/** Whether `version` ("24.21.0") is in ENGINES; only its two forms, ^X.Y.Z and >=X.Y.Z, occur. */
export function supportedNode(version) {
  const v = version.split('.').map(Number);
  const atLeast = (min) => v[0] > min[0] || (v[0] === min[0] && (v[1] > min[1] || (v[1] === min[1] && v[2] >= min[2])));
  return ENGINES.split('||').some((part) => {
    const [, op, min] = /^\s*(\^|>=)(\d+\.\d+\.\d+)\s*$/.exec(part);
    const m = min.split('.').map(Number);
    return atLeast(m) && (op === '>=' || v[0] === m[0]);
  });
}

/** Exit 1 with one line naming the version needed, unless this Node.js is supported. */
export function requireSupportedNode() {
  if (supportedNode(process.versions.node)) return;
  process.stderr.write(`backupctl: needs Node.js 24 (24.15.0 or newer; also 22.22.2+ or 26+), but this is Node.js ${process.version} (${process.execPath}); put a newer node first on PATH (README "Installing")\n`);
  process.exit(1);
}
