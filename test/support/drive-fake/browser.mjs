// A scripted browser for `drive login` tests (BACKUPCTL_BROWSER="node browser.mjs"): opens the
// consent URL on the Drive fake, which approves at once and redirects, and follows that redirect
// to backupctl's loopback listener, as a user's browser would.
const res = await fetch(process.argv[2]);
if (!res.ok) {
  process.stderr.write(`browser: ${res.status} ${await res.text()}\n`);
  process.exit(1);
}
