// Where a path of a restore goes in its staging directory, for the threads that create and write
// staged files (staging-worker.ts, repo/unpack-worker.ts): they refuse any path that would
// resolve outside it, whatever the main thread checked (defence in depth).

/** A path that does not resolve inside the staging directory. */
export class Outside extends Error {}

/**
 * `rel` inside the staging directory `root`. Relative, not empty and without a ".." component, it
 * cannot resolve outside (the tree holds only what the restore made: no links). Checked by hand:
 * path.resolve took 5 to 14 us a path (0.5 to 1.4 s of a thread for 100,000 files; this: 0.2 us).
 */
export function stagedPath(root: string, rel: string): string {
  if (rel === '' || rel[0] === '/' || rel.includes('\0') || rel === '..' || rel.startsWith('../') || rel.endsWith('/..') || rel.includes('/../')) {
    throw new Outside(rel);
  }
  return `${root}/${rel}`;
}
