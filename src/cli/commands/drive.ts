// `backupctl drive login|logout|status|list|rm|prune`, and what push and pull share: opening the
// Drive client (lazily: googleapis loads only here) and the --app-data space option.
import type { Command } from 'commander';
import { BackupctlError, Exit, usageError } from '../../errors.js';
import type { DriveClient } from '../../drive/client.js';
import type { RemoteFile, Space } from '../../drive/remote.js';
import { MAX_ATTEMPTS, type OnRetry } from '../../drive/retry.js';
import { termSafe } from '../../util/terminal-text.js';
import { action, emitJson, info, warn, type RunContext } from '../run.js';
import { count } from '../../util/plural.js';

export const addSpaceOption = (c: Command) =>
  c.option('--app-data', "use the hidden app-data folder (scope drive.appdata) instead of the visible 'backupctl' folder in My Drive");

export const spaceOf = (opts: { appData?: boolean }): Space => (opts.appData ? 'appDataFolder' : 'drive');
export const spaceName = (s: Space) => (s === 'appDataFolder' ? 'the app-data folder' : "My Drive/backupctl");

/**
 * One warning line per retry, terminal or not: a cron run without network must not sit silent
 * for minutes before it fails (why names server codes and network errors: made inert).
 */
export const retryWarning: OnRetry = (why, ms, attempt) => warn(`${termSafe(why)}; retrying in ${(ms / 1000).toFixed(1)} s (attempt ${attempt} of ${MAX_ATTEMPTS})`);

export async function openDrive(ctx: RunContext): Promise<DriveClient> {
  const { DriveClient } = await import('../../drive/client.js');
  return DriveClient.open(ctx.signal, retryWarning);
}

const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;

export const fileJson = (f: RemoteFile, dups?: Map<string, number>) => ({
  id: f.id,
  name: f.name,
  size: f.size,
  created: f.createdTime,
  md5: f.md5,
  sha256: f.sha256,
  verified: f.verified,
  ...(dups ? { sameName: (dups.get(f.name) ?? 1) - 1 } : {}),
});

async function listing(ctx: RunContext, space: Space) {
  const { backupFolder, listBackups } = await import('../../drive/remote.js');
  const drive = await openDrive(ctx);
  const folder = await backupFolder(drive, space, false);
  return { drive, folder, files: folder ? await listBackups(drive, space, folder) : [] };
}

function registerLogin(drive: Command) {
  drive
    .command('login')
    .description('sign in to Google in the browser (your own OAuth client) and keep the tokens, mode 0600')
    .option('--client-secret-file <file>', 'the OAuth client JSON downloaded from the Google Cloud console (type "Desktop app"); remembered for later logins')
    .action(
      action(async (ctx, opts: { clientSecretFile?: string }) => {
        const auth = await import('../../drive/auth.js');
        const { login } = await import('../../drive/login.js');
        const client = opts.clientSecretFile ? await auth.readClientSecretFile(opts.clientSecretFile) : await auth.readSavedClient();
        if (!client) {
          throw usageError('no OAuth client yet: create one of type "Desktop app" in the Google Cloud console (APIs & Services > Credentials), download its JSON and run backupctl drive login --client-secret-file FILE');
        }
        const res = await login(client, ctx.signal, (url, opened) => {
          info(opened ? 'Opened your browser to sign in to Google. If it did not appear, open this address:' : 'Open this address in a browser on this machine to sign in to Google:');
          info(url);
        });
        // Remembered only once it worked: a cancelled or failed sign-in leaves the config as it was.
        if (opts.clientSecretFile) await auth.saveClient(client);
        if (!res.appDataGranted) warn('access to the app-data folder was not granted: push --app-data will not work');
        if (ctx.json) emitJson({ ok: true, scopes: res.scopes });
        else info('Logged in to Google Drive. Tokens are in the config directory (mode 0600).');
      }),
    );
}

function registerLogout(drive: Command) {
  drive
    .command('logout')
    .description("revoke backupctl's access at Google and delete the stored tokens")
    .action(
      action(async (ctx) => {
        const { logout } = await import('../../drive/login.js');
        const r = await logout(ctx.signal, retryWarning);
        if (r.wasLoggedIn && !r.revoked) warn(`could not revoke the token at Google (${r.why}); the local tokens are deleted; remove access at https://myaccount.google.com/permissions`);
        if (ctx.json) emitJson({ ok: true, wasLoggedIn: r.wasLoggedIn, revoked: r.revoked });
        else info(r.wasLoggedIn ? 'Logged out of Google Drive.' : 'Not logged in to Google Drive.');
      }),
    );
}

function registerStatus(drive: Command) {
  drive
    .command('status')
    .description('who is logged in, with which scopes')
    .action(
      action(async (ctx) => {
        const { readTokenFile } = await import('../../drive/auth.js');
        const file = process.env.BACKUPCTL_DRIVE_ACCESS_TOKEN ? null : await readTokenFile();
        const source = process.env.BACKUPCTL_DRIVE_ACCESS_TOKEN ? 'BACKUPCTL_DRIVE_ACCESS_TOKEN' : file ? 'login' : null;
        // A failure like any other (exit 8, {ok:false,...} with --json), as the EXIT STATUS says.
        if (!source) throw new BackupctlError(Exit.refused, 'not logged in to Google Drive: run backupctl drive login', { loggedIn: false });
        const { aboutUser } = await import('../../drive/replies.js');
        const d = await openDrive(ctx);
        const user = aboutUser(await d.call('about', (o) => d.api.about.get({ fields: 'user(displayName,emailAddress)' }, o)));
        await d.auth.flush();
        const scopes = (file?.tokens.scope ?? '').split(/\s+/).filter(Boolean);
        const out = { ok: true, loggedIn: true, source, user: user.emailAddress, name: user.displayName, scopes, since: file?.loggedIn ?? null };
        if (ctx.json) emitJson(out);
        else {
          info(`Logged in to Google Drive as ${termSafe(out.name ?? '?')} <${termSafe(out.user ?? '?')}> (${source}${out.since ? `, since ${out.since}` : ''})`);
          if (scopes.length) info(`Scopes: ${scopes.join(' ')}`);
        }
      }),
    );
}

function registerList(drive: Command) {
  addSpaceOption(drive.command('list').description('the backups on Drive, newest first (duplicated names are marked), then the snapshot repositories')).action(
    action(async (ctx, opts: { appData?: boolean }) => {
      const { duplicateCounts } = await import('../../drive/remote.js');
      const { listRepoFolders } = await import('../../drive/repo-files.js');
      const space = spaceOf(opts);
      const { drive: d, folder, files } = await listing(ctx, space);
      // Repositories are folders (backupctl-repository(5) "ON GOOGLE DRIVE"), never taken for archives.
      const repos = folder ? (await listRepoFolders(d, space, folder)).sort((a, b) => (a.name! < b.name! ? -1 : 1)) : [];
      const repoSpec = (name: string) => `${space === 'appDataFolder' ? 'drive-appdata' : 'drive'}:${name}`;
      const dups = duplicateCounts(files);
      if (ctx.json) {
        return void emitJson({ ok: true, space, files: files.map((f) => fileJson(f, dups)), repositories: repos.map((r) => ({ id: r.id, name: r.name, repo: repoSpec(r.name ?? ''), created: r.createdTime })) });
      }
      for (const r of repos) process.stdout.write(`repository  ${termSafe((r.createdTime ?? '').slice(0, 19).replace('T', ' '))}  ${r.id}  ${termSafe(repoSpec(r.name ?? ''))}\n`);
      if (!files.length) return void info(`No backups in ${spaceName(space)}${repos.length ? ' (besides the repositories above)' : ''}.`);
      const seen = new Map<string, number>();
      for (const f of files) {
        const n = dups.get(f.name) ?? 1;
        const k = (seen.get(f.name) ?? 0) + 1;
        seen.set(f.name, k);
        // The first copy of a duplicated name is the one that name means (the newest).
        const mark = n > 1 ? (k === 1 ? `  [newest of ${n} with this name]` : `  [older duplicate ${k}/${n}: use the id]`) : '';
        process.stdout.write(`${termSafe(f.createdTime.slice(0, 19).replace('T', ' '))}  ${mb(f.size).padStart(10)}  ${f.verified ? 'verified  ' : 'UNVERIFIED'}  ${f.id}  ${termSafe(f.name)}${mark}\n`);
      }
    }),
  );
}

function registerRm(drive: Command) {
  addSpaceOption(drive.command('rm').description('delete one backup from Drive (a duplicated name must be given by id)').argument('<name-or-id>')).action(
    action(async (ctx, nameOrId: string, opts: { appData?: boolean }) => {
      const { resolve, deleteFile } = await import('../../drive/remote.js');
      const { drive: d, files } = await listing(ctx, spaceOf(opts));
      const { file, others } = resolve(files, nameOrId);
      if (others.length) {
        throw usageError(`${others.length + 1} backups are named ${termSafe(file.name)} (ids ${[file, ...others].map((f) => f.id).join(', ')}): give the id of the one to delete`);
      }
      await deleteFile(d, file);
      if (ctx.json) emitJson({ ok: true, deleted: fileJson(file) });
      else info(`Deleted ${termSafe(file.name)} (${file.id}) from Google Drive.`);
    }),
  );
}

function registerPrune(drive: Command) {
  addSpaceOption(
    drive
      .command('prune')
      .description('delete all but the N newest backups, never the newest verified one; shows the plan unless --yes')
      .requiredOption('--keep <n>', 'how many of the newest backups to keep (at least 1)')
      .option('--dry-run', 'only show what would be deleted (the default)')
      .option('--yes', 'really delete'),
  ).action(
    action(async (ctx, opts: { keep: string; dryRun?: boolean; yes?: boolean; appData?: boolean }) => {
      const { planPrune, deleteFile } = await import('../../drive/remote.js');
      if (!/^\d+$/.test(opts.keep)) throw usageError('--keep takes a whole number');
      if (opts.yes && opts.dryRun) throw usageError('--yes and --dry-run contradict each other');
      const { drive: d, files } = await listing(ctx, spaceOf(opts));
      const plan = planPrune(files, Number(opts.keep));
      const doIt = !!opts.yes;
      if (doIt) for (const f of plan.remove) await deleteFile(d, f);
      if (ctx.json) {
        emitJson({ ok: true, dryRun: !doIt, keep: plan.keep.map((f) => fileJson(f)), remove: plan.remove.map((f) => fileJson(f)) });
      } else {
        for (const f of plan.keep) process.stdout.write(`keep    ${termSafe(f.createdTime)}  ${f.id}  ${termSafe(f.name)}${f.verified ? '' : '  (unverified)'}\n`);
        for (const f of plan.remove) process.stdout.write(`${doIt ? 'deleted' : 'delete '} ${termSafe(f.createdTime)}  ${f.id}  ${termSafe(f.name)}\n`);
        if (!doIt && plan.remove.length) info(`Dry run: nothing deleted. Run again with --yes to delete ${count(plan.remove.length, 'backup')}.`);
      }
    }),
  );
}

export function register(program: Command): void {
  const drive = program.command('drive').description('Google Drive: login, logout, status, list, rm, prune (see backupctl-drive(1))');
  registerLogin(drive);
  registerLogout(drive);
  registerStatus(drive);
  registerList(drive);
  registerRm(drive);
  registerPrune(drive);
}
