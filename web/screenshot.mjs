// Opens the demo page in headless Chromium (WebGPU on), waits until it has finished,
// and saves a screenshot. Usage: node web/screenshot.mjs URL OUT.png
// (playwright-core drives the system's /usr/bin/chromium; no browser is downloaded.)
import { chromium } from "playwright-core";

const [url, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
    "--disable-gpu-sandbox", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
  ],
});
const page = await browser.newPage({ viewport: { width: 960, height: 900 } });
page.on("console", (m) => console.log(`[page] ${m.text()}`));
await page.goto(url);
await page.waitForFunction(() => document.body.dataset.done, null, { timeout: 600_000 });
const done = await page.evaluate(() => document.body.dataset.done);
console.log(await page.evaluate(() => document.body.innerText));
await page.screenshot({ path: out, fullPage: true });
await browser.close();
if (done !== "1") {
  console.error("the demo failed");
  process.exit(1);
}
