import { defineConfig } from "vitest/config";

export const config = defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // ONNX sessions are heavy on a 2-core box: run files one after another, not all at once.
    fileParallelism: false,
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});

// vitest reads the default export of its config file; this is the one default export we keep.
export default config;
