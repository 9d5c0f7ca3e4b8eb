// The suite talks only to loopback: any attempt to reach another host fails the test loudly.
import net from 'node:net';
import { isIP } from 'node:net';

const loopback = (host: string) =>
  host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));

const origConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (this: net.Socket, ...args: unknown[]) {
  const first = args[0] as { host?: string; path?: string } | number | string;
  const host = typeof first === 'object' && first !== null ? first.host ?? (first.path ? 'localhost' : 'localhost') : typeof args[1] === 'string' ? args[1] : 'localhost';
  if (!loopback(String(host))) throw new Error(`test tried to reach non-loopback host ${host}`);
  return (origConnect as (...a: unknown[]) => net.Socket).apply(this, args);
} as typeof net.Socket.prototype.connect;
