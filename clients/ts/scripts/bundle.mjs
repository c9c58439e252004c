// Bundles the client into one ESM file for the gateway's demo page:
// crates/holdfast-gateway/assets/holdfast-client.js.
//
// Usage: node scripts/bundle.mjs          writes the bundle
//        node scripts/bundle.mjs --check  exits 1 when the committed bundle is stale

import { readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "..");
export const BUNDLE_PATH = resolve(root, "../../crates/holdfast-gateway/assets/holdfast-client.js");

/** The bundle's text, built in memory. */
export async function bundle() {
  const result = await build({
    entryPoints: [resolve(root, "src/index.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    legalComments: "none",
    charset: "utf8",
    banner: {
      js: "// Holdfast browser client, bundled from clients/ts by `npm run bundle`. Do not edit by hand.",
    },
  });
  return result.outputFiles[0].text;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const text = await bundle();
  if (process.argv.includes("--check")) {
    let committed = "";
    try {
      committed = readFileSync(BUNDLE_PATH, "utf8");
    } catch {
      // A missing bundle is stale too.
    }
    if (committed !== text) {
      console.error(`${BUNDLE_PATH} is stale; run \`npm run bundle\` in clients/ts`);
      process.exit(1);
    }
  } else {
    writeFileSync(BUNDLE_PATH, text);
    console.log(`wrote ${BUNDLE_PATH} (${text.length} bytes)`);
  }
}
