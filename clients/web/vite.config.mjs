// The page is served by the gateway under /app/ (services/gateway/app.py mounts dist/).
import { defineConfig } from "vite";

export default defineConfig({
  base: "/app/",
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 1500 },
  server: { fs: { allow: [".."] } },
});
