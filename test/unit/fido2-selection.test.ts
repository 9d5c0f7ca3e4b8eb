// Several keys plugged in: the one touched wins (authenticatorSelection on CTAP 2.1, the
// zero-length pinUvAuthParam makeCredential fallback on 2.0), the others get CANCEL.
import { afterEach, describe, expect, it } from 'vitest';
import { startAuthenticator, type RunningAuthenticator } from '../support/authenticator/server.js';
import { chooseByTouch, openDevices, type Fido2Device } from '../../src/fido2/device.js';

let running: RunningAuthenticator[] = [];
let open: Fido2Device[] = [];
afterEach(async () => {
  await Promise.all(open.map((d) => d.close()));
  await Promise.all(running.map((r) => r.close()));
  running = [];
  open = [];
});

async function device(o: Parameters<typeof startAuthenticator>[0]) {
  const r = await startAuthenticator(o);
  running.push(r);
  const [d] = await openDevices(r.url, new AbortController().signal);
  open.push(d!);
  return { r, d: d! };
}

describe('choosing among several keys by touch', () => {
  it.each([
    ['CTAP 2.1 selection', {}],
    ['CTAP 2.0 fallback (makeCredential with an empty pinUvAuthParam)', { ctap20: true }],
    ['CTAP 2.0 fallback on a key with a PIN', { ctap20: true, pin: '1234' }],
  ])('%s', async (_, o) => {
    const idle = await device({ touch: 'never' });
    const touched = await device({ ...o, touch: 300 });
    const notes: string[] = [];
    const winner = await chooseByTouch([idle.d, touched.d], { signal: new AbortController().signal, notify: (m) => notes.push(m) });
    expect(winner).toBe(touched.d);
    expect(notes).toEqual(['2 security keys found: touch the one to use']);
    await new Promise((r) => setTimeout(r, 200));
    expect(idle.r.cancels).toBe(1);
    expect(idle.r.auth.log.at(-1)).toMatchObject({ status: 0x2d });
    const log = touched.r.auth.log.filter((l) => l.cmd !== 0x04).map((l) => [l.cmd, l.status]);
    // 2.0 keys answer selection with INVALID_COMMAND; the touched fallback fails with a PIN error.
    expect(log).toEqual('ctap20' in o ? [[0x0b, 0x01], [0x01, 'pin' in o ? 0x31 : 0x35]] : [[0x0b, 0]]);
    open = open.filter((d) => d === winner); // the others were closed by chooseByTouch
  });
});
