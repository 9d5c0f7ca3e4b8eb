// `backupctl doctor`: what backupctl sees (security keys, config, recipients, leftovers of killed
// runs) and what is missing for security keys to work (the USB HID binding and libusb, udev permissions), each
// problem with the command that fixes it.
import type { Command } from 'commander';
import { access, constants, readdir, readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { BackupctlError } from '../../errors.js';
import { configDir, configPath, loadConfig } from '../../config.js';
import { leftoverTemps } from '../../util/fsutil.js';
import { resolve } from 'node:path';
import { b64decode } from '../../util/base64.js';
import { fingerprint } from '../../keys/x25519.js';
import { FIDO2_SLOT_TYPE } from '../../keys/fido2-slot.js';
import { action, emitJson, print, printFields } from '../run.js';

const UDEV_RULE = fileURLToPath(new URL('../../../man/udev/70-backupctl-fido2.rules', import.meta.url));
const UDEV_DIRS = ['/etc/udev/rules.d', '/run/udev/rules.d', '/usr/lib/udev/rules.d', '/lib/udev/rules.d'];

interface KeyReport {
  device: string;
  name?: string;
  aaguid?: string;
  versions?: string[];
  hmacSecret?: boolean;
  pinSet?: boolean | null;
  pinUvAuthProtocols?: number[];
  error?: string;
}

interface Problem {
  problem: string;
  fix: string;
}

/** Does some installed udev rule grant users access to FIDO HID devices? */
async function udevRuleInstalled(): Promise<boolean> {
  for (const dir of UDEV_DIRS) {
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue;
    }
    for (const n of names.filter((x) => x.endsWith('.rules'))) {
      const text = await readFile(`${dir}/${n}`, 'utf8').catch(() => '');
      if (/backupctl-fido2|F1D0|FIDO_TOKEN|u2f/i.test(n + text) && /uaccess|MODE=|GROUP=/.test(text)) return true;
    }
  }
  return false;
}

/** hidraw nodes this user cannot open (all of them look alike without access). */
async function unreadableHidraw(): Promise<string[]> {
  const names = (await readdir('/dev').catch(() => [] as string[])).filter((n) => n.startsWith('hidraw'));
  const out: string[] = [];
  for (const n of names) {
    await access(`/dev/${n}`, constants.R_OK | constants.W_OK).catch(() => out.push(`/dev/${n}`));
  }
  return out;
}

async function probe(spec: string | undefined, signal: AbortSignal): Promise<{ keys: KeyReport[]; problems: Problem[] }> {
  const problems: Problem[] = [];
  const keys: KeyReport[] = [];
  const hid = await import('../../fido2/transport/hid.js');
  const { Fido2Device } = await import('../../fido2/device.js');
  const targets: Array<{ device: string; open: () => Promise<import('../../fido2/transport/types.js').Transport> }> = [];
  if (spec?.startsWith('udp:')) {
    const { openUdp } = await import('../../fido2/transport/udp.js');
    targets.push({ device: spec, open: () => openUdp(spec) });
  } else {
    try {
      const found = await hid.listHidDevices();
      for (const d of found) {
        if (spec && d.path !== spec) continue;
        targets.push({ device: d.path, open: () => hid.openHid(d.path, `${d.manufacturer} ${d.product}`) });
      }
      if (spec && targets.length === 0) targets.push({ device: spec, open: () => hid.openHid(spec) });
    } catch (e) {
      const msg = e instanceof BackupctlError ? e.message : String(e);
      problems.push({
        problem: msg,
        fix: /libusb/.test(msg) ? 'apt-get install libusb-1.0-0 (Debian/Ubuntu) or dnf install libusb1 (Fedora)' : 'reinstall backupctl (npm install -g backupctl)',
      });
    }
  }
  for (const t of targets) {
    const report: KeyReport = { device: t.device };
    try {
      const dev = await Fido2Device.open(await t.open(), signal);
      try {
        Object.assign(report, {
          name: dev.name,
          aaguid: dev.info.aaguid,
          versions: dev.info.versions,
          hmacSecret: dev.hasHmacSecret,
          pinSet: dev.pinSet ?? null,
          pinUvAuthProtocols: dev.info.pinUvAuthProtocols,
        });
        if (!dev.hasHmacSecret) problems.push({ problem: `${dev.name} has no hmac-secret extension`, fix: 'use a FIDO2 key with hmac-secret (YubiKey 5, SoloKey, Nitrokey 3, ...)' });
      } finally {
        await dev.close();
      }
    } catch (e) {
      report.error = e instanceof BackupctlError ? e.message : String(e);
    }
    keys.push(report);
  }
  if (process.platform === 'linux') {
    const locked = await unreadableHidraw();
    const ruled = await udevRuleInstalled();
    if (locked.length > 0 || (!ruled && process.getuid?.() !== 0)) {
      problems.push({
        problem: locked.length > 0 ? `no read/write access to ${locked.join(', ')} (security keys need it without root)` : 'no udev rule giving users access to FIDO security keys was found',
        fix: `sudo cp ${UDEV_RULE} /etc/udev/rules.d/ && sudo udevadm control --reload-rules && sudo udevadm trigger, then replug the key`,
      });
    }
  }
  if (process.platform === 'win32') {
    problems.push({ problem: 'Windows allows raw access to FIDO security keys to Administrators only', fix: 'run backupctl from an Administrator terminal when it needs the key' });
  }
  return { keys, problems };
}

/** Temporary files of killed runs (fsutil leftoverTemps) in the current, config and --dir directories. */
async function leftovers(dirs: string[]): Promise<Array<{ path: string; size: number }>> {
  const seen = new Set<string>();
  const out: Array<{ path: string; size: number }> = [];
  for (const d of dirs.map((x) => resolve(x))) {
    if (seen.has(d)) continue;
    seen.add(d);
    out.push(...(await leftoverTemps(d)));
  }
  return out;
}

async function doctor(json: boolean, o: { device?: string; dir?: string[] }, signal: AbortSignal): Promise<void> {
  const spec = o.device ?? (process.env.BACKUPCTL_FIDO2_DEVICE || undefined);
  const { keys, problems } = await probe(spec, signal);
  let recipients: Array<{ type: string; label: string; fingerprint: string }> = [];
  try {
    const cfg = await loadConfig();
    recipients = cfg.recipients.map((r) => ({ type: r.type, label: r.label, fingerprint: fingerprint(r.type, b64decode(r.publicKey)) }));
  } catch (e) {
    problems.push({ problem: e instanceof BackupctlError ? e.message : String(e), fix: `repair or remove ${configPath()}` });
  }
  const left = await leftovers(['.', configDir(), ...(o.dir ?? [])]);
  for (const l of left) {
    problems.push({ problem: `left by a killed backupctl run: ${l.path} (${(l.size / 1e6).toFixed(1)} MB)`, fix: `rm -- '${l.path.replace(/'/g, "'\\''")}' (or the next create into that directory removes it)` });
  }
  if (!recipients.some((r) => r.type === 'recovery')) problems.push({ problem: 'no recovery code in the config: a lost or reset key would lock you out', fix: 'backupctl recovery-code new' });
  if (!recipients.some((r) => r.type === FIDO2_SLOT_TYPE)) problems.push({ problem: 'no security key enrolled', fix: 'backupctl key enroll' });

  if (json) return emitJson({ ok: true, config: configPath(), keys, recipients, leftovers: left, problems });
  print(`Security keys found: ${keys.length === 0 ? 'none' : keys.length}`);
  for (const k of keys) {
    if (k.error) print(`  ${k.device}: cannot talk to it: ${k.error}`);
    else
      print(
        `  ${k.name}`,
        `    aaguid ${k.aaguid}, versions ${k.versions!.join(' ')}, hmac-secret ${k.hmacSecret ? 'yes' : 'NO'}, ` +
          `PIN ${k.pinSet === null ? 'not supported' : k.pinSet ? 'set' : 'not set'}, PIN/UV protocols ${k.pinUvAuthProtocols!.join(',') || 'none'}`,
      );
  }
  print(`Config: ${configPath()}`);
  print(`Recipients: ${recipients.length === 0 ? 'none' : ''}`);
  for (const r of recipients) printFields(`  ${r.type}`, r.label, r.fingerprint);
  if (problems.length === 0) print('No problems found.');
  else {
    print('Problems:');
    for (const p of problems) print(`  - ${p.problem}`, `    fix: ${p.fix}`);
  }
}

export function register(program: Command): void {
  program
    .command('doctor')
    .description('list security keys, config and recipients, and what is missing, with fixes')
    .option('--device <path>', 'also probe this key: a hidraw path or udp://127.0.0.1:PORT (or BACKUPCTL_FIDO2_DEVICE)')
    .option('--dir <dir>', 'also look for leftovers of killed runs in this directory, besides the current and the config one (repeatable)', (v: string, prev: string[] = []) => [...prev, v])
    .action(action(async (ctx, o: { device?: string; dir?: string[] }) => doctor(ctx.json, o, ctx.signal)));
}
