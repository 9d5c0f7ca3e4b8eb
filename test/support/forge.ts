// Forging authentic archives, as anyone holding the file key could (an archive's own writer, or
// someone who wrapped the key to a recipient): the payload plaintext of an archive made with a
// known file key, and a payload sealed again after the plaintext was edited.
import { parseHeader } from '../../src/archive/header.js';
import { openStream, payloadKey, SegmentSealer, segmentKey } from '../../src/archive/stream.js';
import { MemorySink } from '../../src/archive/output.js';

export interface Forge {
  fileKey: Uint8Array;
  nonce: Uint8Array;
  segmentSize: number;
}

/** The archive's header bytes and its whole payload plaintext. */
export async function openPayload(archive: Buffer, f: Forge): Promise<{ header: Buffer; plain: Buffer }> {
  const h = parseHeader(archive);
  const parts: Buffer[] = [];
  for await (const p of openStream(segmentKey(payloadKey(f.fileKey, f.nonce)), f.segmentSize, [archive.subarray(h.headerLength)])) parts.push(p);
  return { header: archive.subarray(0, h.headerLength), plain: Buffer.concat(parts) };
}

/** `header` followed by `plain` sealed as the payload. */
export async function sealPayload(header: Buffer, plain: Buffer, f: Forge): Promise<Buffer> {
  const sink = new MemorySink();
  const s = new SegmentSealer(sink.segments(payloadKey(f.fileKey, f.nonce), f.segmentSize), f.segmentSize);
  await s.write(plain);
  await s.finish();
  return Buffer.concat([header, sink.bytes]);
}
