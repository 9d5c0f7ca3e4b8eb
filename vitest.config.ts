import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Most tests wait on CLI processes they spawn (and on lock waits, backoffs, slow readers), so
    // three files at a time keep two cores busy; vitest's default (cores - 1) ran one at a time here.
    maxWorkers: 3,
    setupFiles: ['test/support/no-network.ts'],
  },
});
