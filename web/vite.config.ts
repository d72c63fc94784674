/// <reference types="vitest/config" />
import { defineConfig } from "vite";

declare const process: { env: Record<string, string | undefined> };

// `npm run dev` proxies the API and the login route to a running mocolab server.
const target = process.env.MOCOLAB_URL ?? "http://127.0.0.1:8000";

export default defineConfig({
  esbuild: { jsx: "automatic", jsxImportSource: "preact" },
  server: {
    proxy: {
      "/api": { target, changeOrigin: false },
      "/login": { target, changeOrigin: false },
      "/logout": { target, changeOrigin: false },
    },
  },
  build: { outDir: "dist", emptyOutDir: true, target: "es2022", sourcemap: false },
  test: { environment: "jsdom", include: ["src/**/*.test.ts", "src/**/*.test.tsx"] },
});
