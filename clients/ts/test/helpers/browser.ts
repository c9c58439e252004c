/**
 * Headless Chromium for the browser tests, through playwright-core and the system's Chromium
 * (Debian: `apt-get install -y chromium`); no browser is downloaded. `$CHROMIUM_PATH` overrides
 * `/usr/bin/chromium`. Playwright starts Chromium with a fresh temporary profile directory
 * (`--user-data-dir`) and removes it on close; each page gets its own context, so one page can
 * go offline while the other stays online.
 */

import { existsSync } from "node:fs";
import { chromium, type Browser } from "playwright-core";

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

/** Launches headless Chromium with the project's flags. */
export function launchBrowser(): Promise<Browser> {
  if (!existsSync(CHROMIUM_PATH)) {
    throw new Error(`Chromium not found at ${CHROMIUM_PATH}; install it (Debian: apt-get install -y chromium) or set CHROMIUM_PATH`);
  }
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    timeout: 30_000,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      "--disable-quic",
    ],
  });
}
