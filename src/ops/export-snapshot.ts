// `export --repo REPO SNAPSHOT -o FILE`: a snapshot as a classic single-file archive
// (backupctl-format(5)) for a USB stick or for sharing: its tree and content, read and checked
// chunk by chunk from the repository, written through the archive writer to the recipients given.
import { EntryType } from '../archive/format.js';
import { chunkedContent, writeArchive, type PackResult, type SourceEntry } from '../archive/pack.js';
import type { Sink } from '../archive/output.js';
import type { Recipient } from '../keys/types.js';
import type { RepoReader } from '../repo/reader.js';
import type { Snapshot } from '../repo/snapshot.js';
import type { TreeEntry } from '../repo/tree.js';

async function* entries(reader: RepoReader, tree: TreeEntry[]): AsyncGenerator<SourceEntry> {
  for (const e of tree) {
    const base = { path: e.path, type: e.type, mode: e.mode, mtimeNs: e.mtimeNs };
    if (e.type === EntryType.Symlink) yield { ...base, target: e.target };
    else if (e.type === EntryType.Dir) yield base;
    else {
      const content = async function* () {
        for (const id of e.chunks) yield await reader.chunk(id, e.path);
      };
      // Compressed again where it shrinks: the archive writer decides per file, as create does.
      yield { ...base, open: async () => chunkedContent(content(), true) };
    }
  }
}

export async function exportSnapshot(o: { reader: RepoReader; snapshot: Snapshot; recipients: Recipient[]; sink: Sink; signal?: AbortSignal }): Promise<PackResult> {
  const tree = await o.reader.tree(o.snapshot);
  return writeArchive({ recipients: o.recipients, entries: entries(o.reader, tree), sink: o.sink, signal: o.signal });
}
