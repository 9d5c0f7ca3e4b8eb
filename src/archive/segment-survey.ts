// Salvage's view of the sealed payload: every segment opened on its own, in order, and judged
// intact, damaged or missing, instead of the first failure ending the read. What a segment can
// prove (backupctl-format(5) "SALVAGE"): its nonce holds its index and the last-segment flag, so
// one that authenticates is segment i of this archive, sealed with its file key, and either the
// final one or not. A segment from another archive, moved, or repeated never authenticates.
import type { KeyObject } from 'node:crypto';
import { ByteQueue } from '../util/bytequeue.js';
import { TAG_LEN } from './format.js';
import { padme } from './entries.js';
import { freeBuffers, openSegment } from './stream.js';

/** One segment of the payload: its plaintext pieces when it authenticated, else null (damaged). */
export interface SegmentState {
  index: number;
  plain: Buffer[] | null;
}

/** How the payload ended, known once every segment has been judged. */
export interface PayloadEnd {
  /** Sealed payload bytes present. */
  bytes: number;
  /** Segments present, whole or in part. */
  segments: number;
  /**
   * 'final': the final segment is present and authenticates; 'truncated': it is not present (the
   * last one present authenticates as a non-final segment, or the plaintext length cannot be a
   * padded one, or what is left is too short for a segment); 'damaged': the last segment present
   * fails and the length is one a complete archive could have.
   */
  kind: 'final' | 'truncated' | 'damaged';
  /** Bytes after a final segment met before the end of the file (appended). */
  appended: number;
  /** When truncated: the first segment that is not (wholly) present. */
  firstMissing: number | null;
}

export const newPayloadEnd = (): PayloadEnd => ({ bytes: 0, segments: 0, kind: 'truncated', appended: 0, firstMissing: null });

function tryOpen(key: KeyObject, index: number, last: boolean, sealed: Buffer): Buffer[] | null {
  try {
    return openSegment(key, index, last, sealed);
  } catch {
    return null;
  }
}

/**
 * Judge the sealed payload segment by segment, in constant memory (one sealed segment held back,
 * so that the final one is known). `end` is filled in when the generator finishes.
 */
export async function* surveySegments(key: KeyObject, segmentSize: number, sealedBytes: AsyncIterable<Uint8Array>, end: PayloadEnd): AsyncGenerator<SegmentState> {
  const sealedSize = segmentSize + TAG_LEN;
  const q = new ByteQueue();
  let index = 0;
  let finalSeen = false;
  for await (const chunk of sealedBytes) {
    end.bytes += chunk.length;
    if (finalSeen) {
      end.appended += chunk.length;
      continue;
    }
    q.push(chunk);
    while (q.length > sealedSize) {
      const sealed = q.take(sealedSize);
      let plain = tryOpen(key, index, false, sealed);
      if (!plain) {
        // A whole segment that opens as the final one is where the archive ends: the rest was
        // appended. (A shorter final segment with bytes appended fails both ways: damaged.)
        plain = tryOpen(key, index, true, sealed);
        if (plain) {
          finalSeen = true;
          end.appended += q.length;
          q.take(q.length);
        }
      }
      end.segments++;
      freeBuffers([sealed]); // opened: only the plaintext is needed now
      yield { index: index++, plain };
      if (finalSeen) break;
    }
  }
  if (finalSeen) {
    end.kind = 'final';
    return;
  }
  end.kind = 'truncated';
  end.firstMissing = index; // unless the piece left over proves otherwise
  if (q.length === 0) return; // nothing after the last whole segment (or after the header)
  end.segments++;
  const sealed = q.take(q.length);
  if (sealed.length <= TAG_LEN) return; // too short to be a segment: a piece of one
  let plain = tryOpen(key, index, true, sealed);
  if (plain) {
    end.kind = 'final';
    end.firstMissing = null;
  } else if (sealed.length === sealedSize && (plain = tryOpen(key, index, false, sealed))) {
    end.firstMissing = index + 1; // cut exactly at a segment boundary
  } else {
    // A complete payload's plaintext length is always a Padmé length (backupctl-format(5)), so
    // a failing last segment of any other length is the piece of one that was cut.
    const plainLength = index * segmentSize + sealed.length - TAG_LEN;
    if (padme(plainLength) !== plainLength) return;
    end.kind = 'damaged';
    end.firstMissing = null;
  }
  freeBuffers([sealed]);
  yield { index, plain };
}
