// The storefront in headless Chromium against a running stack, as customers
// and an admin use it. Run by e2e/tests/e2e/storefront.rs, which starts the stack:
//
//   GATEWAY_URL=http://127.0.0.1:PORT ADMIN_USERNAME=... ADMIN_PASSWORD=... \
//   EXPIRED_TOKEN=<a correctly signed, expired JWT> SCREENSHOT_DIR=target/screenshots \
//   RESULTS_FILE=/tmp/results.json node e2e/browser/storefront.mjs
//
// Exits non-zero on the first failed check, and on any console error, page
// error, failed request or HTTP error answer that a step did not expect.

import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE = env("GATEWAY_URL").replace(/\/$/, "");
const ADMIN = { username: env("ADMIN_USERNAME"), password: env("ADMIN_PASSWORD") };
const EXPIRED_TOKEN = env("EXPIRED_TOKEN");
const SCREENSHOTS = env("SCREENSHOT_DIR");
const RESULTS_FILE = env("RESULTS_FILE");
const TIMEOUT_MS = 15_000;
const MAX_FIRST_LOAD_GZIP_BYTES = 100 * 1024;

mkdirSync(SCREENSHOTS, { recursive: true });

// ------------------------------------------------------------------ checks

function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

const started = Date.now();
async function step(name, work) {
  const at = Date.now();
  await work();
  console.log(`ok   ${name} (${Date.now() - at} ms)`);
}

// What went wrong in any page, unless the running step expects it.
const problems = [];
/** HTTP statuses, and "network" for aborted requests, the current step provokes on purpose. */
let expected = new Set();

async function expecting(kinds, work) {
  const before = expected;
  expected = new Set(kinds);
  try {
    await work();
  } finally {
    expected = before;
  }
}

function watch(page, who) {
  page.on("console", (message) => {
    if (message.type() !== "error") return;
    const text = message.text();
    // Chromium logs every HTTP error answer and aborted request of fetch.
    const status = /the server responded with a status of (\d+)/.exec(text)?.[1];
    if (status && expected.has(Number(status))) return;
    if (/net::ERR_/.test(text) && expected.has("network")) return;
    problems.push(`${who}: console error: ${text}`);
  });
  page.on("pageerror", (error) => problems.push(`${who}: page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    if (!expected.has("network")) problems.push(`${who}: request failed: ${request.method()} ${request.url()} ${request.failure()?.errorText}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400 && !expected.has(response.status())) {
      problems.push(`${who}: ${response.request().method()} ${response.url()} answered ${response.status()}`);
    }
  });
}

function assertNoProblems() {
  if (problems.length) throw new Error(`unexpected errors in the page:\n  ${problems.join("\n  ")}`);
}

// --------------------------------------------------------------- API (test)

async function api(method, path, { token, body, headers = {} } = {}) {
  const response = await fetch(BASE + path, {
    method,
    headers: {
      ...(body ? { "Content-Type": "application/json" } : {}),
      ...(token ? { Authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function stockOf(id) {
  return (await api("GET", `/products/${id}`)).stock;
}

// ------------------------------------------------------------ page helpers

async function shot(page, name) {
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

/** Waits for the page titled `text`, and checks it shows no leaked JavaScript values. */
async function heading(page, text) {
  await page.getByRole("heading", { level: 1, name: text }).waitFor({ timeout: TIMEOUT_MS });
  const shown = await page.locator("body").innerText();
  const leaked = /\b(undefined|null|NaN|false|true)\b|\[object \w+\]/.exec(shown);
  check(!leaked, `page "${text}" shows ${leaked?.[0]}: ${shown}`);
  // Every control has a name a screen reader can say.
  const unnamed = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea, button, a[href]")]
      .filter((el) => !el.closest("[hidden]"))
      .filter((el) => (el.labels?.length ?? 0) === 0 && !el.getAttribute("aria-label") && !el.textContent.trim())
      .map((el) => el.outerHTML),
  );
  check(unnamed.length === 0, `page "${text}" has controls without a name: ${unnamed.join(" ")}`);
}

async function notice(page, pattern) {
  await page.locator("#notice", { hasText: pattern }).waitFor({ timeout: TIMEOUT_MS });
}

async function login(page, { username, password }) {
  await page.goto(`${BASE}/#/login`);
  await heading(page, "Log in");
  await page.getByLabel("Username or email").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Log in" }).click();
  await notice(page, `Welcome, ${username}.`);
}

/** The customer's token, as the page keeps it. */
async function tokenOf(page) {
  return page.evaluate(() => JSON.parse(sessionStorage.getItem("storefront.session")).token);
}

async function addToCart(page, product, quantity) {
  await page.goto(`${BASE}/#/products/${product.id}`);
  // The previous page may be another product's, with its own Quantity field.
  await heading(page, product.name);
  await page.getByLabel("Quantity").fill(String(quantity));
  await page.getByRole("button", { name: "Add to cart" }).click();
  await notice(page, /^Added /);
}

async function emptyCart(page) {
  await page.evaluate(() => localStorage.removeItem("storefront.cart"));
}

/** Opens the product's page until it shows `text` (the stock settles asynchronously). */
async function stockShown(page, product, text) {
  const deadline = Date.now() + TIMEOUT_MS;
  await page.goto(`${BASE}/#/products/${product.id}`);
  await heading(page, product.name);
  while (!(await page.locator("#stock", { hasText: text }).isVisible())) {
    check(Date.now() < deadline, `${product.name} never showed ${text}`);
    await page.waitForTimeout(250);
    await page.reload();
    await heading(page, product.name);
  }
}

async function orderStatus(page, text) {
  await page.locator("#order-status", { hasText: text }).waitFor({ timeout: TIMEOUT_MS });
}

/** Presses Tab until the focused element is `target`, then Enter: only the keyboard. */
async function tabToAndPress(page, target, describe) {
  const handle = await target.elementHandle({ timeout: TIMEOUT_MS });
  for (let presses = 0; presses < 80; presses++) {
    await page.keyboard.press("Tab");
    if (await handle.evaluate((el) => el === document.activeElement)) {
      await page.keyboard.press("Enter");
      return;
    }
  }
  throw new Error(`Tab never reached ${describe}`);
}

// WCAG 2.1 AA contrast (1.4.3) of every visible text on the page: 4.5:1, or
// 3:1 for large text (24 px, or 18.66 px bold); disabled controls are exempt.
async function contrastIsReadable(page, what) {
  const failures = await page.evaluate(() => {
    const rgb = (text) => (text.match(/[\d.]+/g) || []).map(Number);
    const luminance = ([r, g, b]) => {
      const lin = (c) => ((c /= 255) <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
      return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    const background = (el) => {
      for (let node = el; node; node = node.parentElement) {
        const [r, g, b, a = 1] = rgb(getComputedStyle(node).backgroundColor);
        if (a > 0) return [r, g, b];
      }
      return [255, 255, 255];
    };
    const out = [];
    for (const el of document.querySelectorAll("body *")) {
      const hasText = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      const style = getComputedStyle(el);
      if (!hasText || el.closest(":disabled, [aria-disabled=true]")) continue;
      if (style.visibility === "hidden" || el.getClientRects().length === 0) continue;
      const fg = luminance(rgb(style.color));
      const bg = luminance(background(el));
      const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      const size = parseFloat(style.fontSize);
      const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
      if (ratio < (large ? 3 : 4.5)) {
        out.push(`${el.tagName.toLowerCase()} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}:1`);
      }
    }
    return out;
  });
  check(failures.length === 0, `${what}: text below WCAG AA contrast: ${failures.join("; ")}`);
}

async function noHorizontalScroll(page, what) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
    width: window.innerWidth,
  }));
  check(scroll <= width, `${what} at 375 px scrolls sideways (${scroll} px wide)`);
}

// -------------------------------------------------------------------- run

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  // playwright gives every launch a fresh, temporary --user-data-dir.
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

async function newPage(who, viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(TIMEOUT_MS);
  const page = await context.newPage();
  watch(page, who);
  return page;
}

try {
  const admin = await api("POST", "/users/login", { body: ADMIN });
  const product = (name, category, price, stock) =>
    api("POST", "/products", { token: admin.token, body: { name, category, price, stock } });
  const rust = await product("Rust in Action", "Books", 39.99, 10);
  const zero = await product("Zero to Production", "Books", 45.5, 10);
  const can = await product("Watering can", "Garden", 12, 3);
  const lamp = await product("Last lamp", "Lighting", 80, 1);
  for (let i = 1; i <= 12; i++) await product(`Spoon ${i}`, "Kitchen", 2.5, 50);

  const customer = { username: `shopper${Date.now()}`, password: "correct horse battery" };
  const page = await newPage("customer");

  await step("the first page is small, cached and locked down", async () => {
    let gzipped = 0;
    const loaded = [];
    const measure = async (response) => {
      loaded.push(response);
      const body = await response.body().catch(() => Buffer.alloc(0));
      gzipped += gzipSync(body).length;
    };
    page.on("response", measure);
    const document = await page.goto(`${BASE}/`);
    await heading(page, "Products");
    await page.waitForLoadState("networkidle");
    page.off("response", measure);
    const headers = document.headers();
    check(headers["content-security-policy"]?.startsWith("default-src 'self'"), `CSP: ${headers["content-security-policy"]}`);
    check(headers.etag && headers["cache-control"] === "no-cache", `page caching: ${JSON.stringify(headers)}`);
    const asset = loaded.find((r) => r.url().endsWith("/app.js"));
    check(asset?.headers()["cache-control"]?.includes("immutable"), "app.js is cached for good under its versioned name");
    check(gzipped < MAX_FIRST_LOAD_GZIP_BYTES, `the first page is ${gzipped} bytes gzipped`);
    console.log(`     first page: ${loaded.length} responses, ${gzipped} bytes gzipped`);
  });

  await step("catalogue pages", async () => {
    await page.locator(".summary", { hasText: "16 products" }).waitFor();
    await page.getByText("Page 1 of 2").waitFor();
    await shot(page, "catalogue");
    await page.getByRole("link", { name: "Next →" }).click();
    await page.getByText("Page 2 of 2").waitFor();
  });

  await step("a bad registration shows the API's field errors beside the fields", async () => {
    await page.getByRole("link", { name: "Register" }).click();
    await heading(page, "Create an account");
    await page.getByLabel("Username").fill(customer.username);
    await page.getByLabel("Email").fill("not-an-email");
    await page.getByLabel("Password (8 to 128 characters)").fill("short");
    await expecting([400], async () => {
      await page.getByRole("button", { name: "Create account" }).click();
      await page.locator("#register-password-error", { hasText: "at least 8 characters" }).waitFor();
      await page.locator("#register-email-error", { hasText: "email address" }).waitFor();
    });
    check((await page.getByLabel("Email").getAttribute("aria-invalid")) === "true", "the email field is marked invalid");
  });

  await step("register and log in", async () => {
    await page.getByLabel("Email").fill(`${customer.username}@example.com`);
    await page.getByLabel("Password (8 to 128 characters)").fill(customer.password);
    await page.getByRole("button", { name: "Create account" }).click();
    await notice(page, `Account ${customer.username} created`);
    await heading(page, "Log in");
    await page.getByLabel("Username or email").fill(customer.username);
    await page.getByLabel("Password").fill(customer.password);
    await page.getByRole("button", { name: "Log in" }).click();
    await notice(page, `Welcome, ${customer.username}.`);
    await page.getByRole("link", { name: "My orders" }).waitFor();
  });

  await step("browse a category, add, change and remove cart lines, kept across a reload", async () => {
    await page.goto(`${BASE}/#/`);
    await heading(page, "Products");
    await page.getByLabel("Category").fill("Books");
    await page.getByRole("button", { name: "Filter" }).click();
    await page.locator(".summary", { hasText: "2 products in “Books”" }).waitFor();
    await page.getByRole("link", { name: "Rust in Action" }).click();
    await heading(page, "Rust in Action");
    await page.locator("#stock", { hasText: "10 in stock" }).waitFor();
    await shot(page, "product");
    await page.getByLabel("Quantity").fill("2");
    await page.getByRole("button", { name: "Add to cart" }).click();
    await notice(page, "Added 2 × Rust in Action");
    await addToCart(page, zero, 1);
    await addToCart(page, can, 1);
    await page.getByRole("link", { name: /^Cart/ }).click();
    await heading(page, "Your cart");
    await page.getByLabel("Quantity of Zero to Production").fill("2");
    await page.getByLabel("Quantity of Zero to Production").press("Tab");
    await page.getByRole("button", { name: "Remove Watering can" }).click();
    await page.reload();
    await heading(page, "Your cart");
    check((await page.locator(".lines .line").count()) === 2, "two lines after the reload");
    check((await page.getByLabel("Quantity of Zero to Production").inputValue()) === "2", "the changed quantity is kept");
    await page.locator("#cart-total", { hasText: "$170.98" }).waitFor();
    await shot(page, "cart");
  });

  /** Orders the customer has made, to check against the API at the end. */
  let ordersPlaced = 0;
  await step("checkout: CONFIRMED with the right total, then cancelled with the stock back", async () => {
    await page.getByRole("button", { name: "Place order" }).click();
    await heading(page, "Your order");
    await orderStatus(page, "Confirmed");
    ordersPlaced++;
    await page.locator("#order-total", { hasText: "$170.98" }).waitFor();
    await shot(page, "order-confirmed");
    check((await stockOf(rust.id)) === 8 && (await stockOf(zero.id)) === 8, "the order took the stock");
    await page.getByRole("button", { name: "Cancel order" }).click();
    await orderStatus(page, "Cancelled");
    check(!(await page.getByRole("button", { name: "Cancel order" }).isVisible()), "a cancelled order offers no cancel");
    // The stock comes back when the cancellation event is applied, a moment later.
    await stockShown(page, rust, "10 in stock");
    await stockShown(page, zero, "10 in stock");
  });

  await step("an order for more than the stock is refused with the reason", async () => {
    await addToCart(page, lamp, 3);
    await page.goto(`${BASE}/#/cart`);
    await expecting([409], async () => {
      await page.getByRole("button", { name: "Place order" }).click();
      // Either the order service refuses it at once (409), or the order is
      // REJECTED when the stock is applied; both tell the customer why.
      await page
        .locator("p.alert[role=alert]:not([hidden]), #order-reason:not([hidden])")
        .first()
        .waitFor();
    });
    const shown = await page.locator("p.alert[role=alert]:not([hidden]), #order-reason:not([hidden])").first().textContent();
    check(/stock/i.test(shown), `the refusal names the stock: ${shown}`);
    if (page.url().includes("#/orders/")) ordersPlaced++;
    else await page.locator(".line .field-error", { hasText: "Only 1 left; you asked for 3." }).waitFor();
    check((await stockOf(lamp.id)) === 1, "the lamp's stock is untouched");
    await emptyCart(page);
  });

  await step("a REJECTED order shows its reason and cannot be cancelled", async () => {
    // The stock can run out between the order and its application; the stack
    // refuses at once when it can, so this answer is played in the browser.
    const id = "00000000-0000-4000-8000-000000000001";
    const reason = `insufficient stock: ${lamp.id} has 1 left`;
    await page.route(`**/orders/${id}`, (route) =>
      route.fulfill({
        contentType: "application/json",
        body: JSON.stringify({
          id,
          user_id: "00000000-0000-4000-8000-000000000002",
          status: "REJECTED",
          status_reason: reason,
          total: 240,
          items: [{ product_id: lamp.id, quantity: 3, unit_price: 80 }],
          created_at: new Date().toISOString(),
          updated_at: new Date().toISOString(),
        }),
      }),
    );
    await page.goto(`${BASE}/#/orders/${id}`);
    await orderStatus(page, "Rejected");
    await page.locator("#order-reason", { hasText: `Reason: ${reason}` }).waitFor();
    await page.getByRole("link", { name: "Last lamp" }).waitFor();
    check(!(await page.getByRole("button", { name: "Cancel order" }).isVisible()), "a rejected order offers no cancel");
    await page.unroute(`**/orders/${id}`);
  });

  let shippedOrderId;
  await step("a double click and a retry after a lost answer make one order", async () => {
    const token = await tokenOf(page);
    const before = (await api("GET", "/orders", { token })).total;
    await addToCart(page, zero, 1);
    await page.goto(`${BASE}/#/cart`);
    // The first answer is lost on the way back: the server made the order,
    // the page sees a network error and the customer tries again.
    let lost = 0;
    await page.route("**/orders", async (route) => {
      if (route.request().method() !== "POST" || lost++ > 0) return route.fallback();
      await route.fetch();
      await route.abort("connectionreset");
    });
    await expecting(["network"], async () => {
      await page.getByRole("button", { name: "Place order" }).dblclick();
      await page.locator("p.alert", { hasText: "could not be reached" }).waitFor();
    });
    await page.unroute("**/orders");
    await page.getByRole("button", { name: "Place order" }).dblclick();
    await heading(page, "Your order");
    await orderStatus(page, "Confirmed");
    ordersPlaced++;
    shippedOrderId = page.url().split("/").pop();
    const after = (await api("GET", "/orders", { token })).total;
    check(after === before + 1, `one order made, not ${after - before}`);
    check((await stockOf(zero.id)) === 9, "the stock was taken once");
  });

  await step("an expired token leads to the login page with a message", async () => {
    const user = await page.evaluate(() => JSON.parse(sessionStorage.getItem("storefront.session")).user);
    // Our clock thinks the token is good; the server says it has expired.
    await page.evaluate(
      ([token, user]) => sessionStorage.setItem("storefront.session", JSON.stringify({ token, expiresAt: Date.now() + 3_600_000, user })),
      [EXPIRED_TOKEN, user],
    );
    await expecting([401], async () => {
      await page.goto(`${BASE}/#/orders`);
      await heading(page, "Log in");
      await notice(page, "Your session has expired. Please log in again.");
    });
    await page.getByLabel("Username or email").fill(customer.username);
    await page.getByLabel("Password").fill(customer.password);
    await page.getByRole("button", { name: "Log in" }).click();
    await heading(page, "My orders");
  });

  await step("keyboard-only checkout", async () => {
    await page.goto(`${BASE}/#/?category=Books`);
    await heading(page, "Products: Books");
    await tabToAndPress(page, page.getByRole("link", { name: "Rust in Action" }), "the product");
    await heading(page, "Rust in Action");
    await tabToAndPress(page, page.getByRole("button", { name: "Add to cart" }), "Add to cart");
    await notice(page, "Added 1 × Rust in Action");
    await tabToAndPress(page, page.getByRole("link", { name: /^Cart/ }), "the cart link");
    await heading(page, "Your cart");
    await tabToAndPress(page, page.getByRole("button", { name: "Place order" }), "Place order");
    await heading(page, "Your order");
    await orderStatus(page, "Confirmed");
    ordersPlaced++;
  });

  const adminPage = await newPage("admin");
  let hose;
  await step("an admin creates a product, with field errors beside the fields first", async () => {
    await login(adminPage, ADMIN);
    await adminPage.getByRole("link", { name: "Admin" }).click();
    await heading(adminPage, "Administration");
    await adminPage.getByRole("link", { name: "New product" }).click();
    await heading(adminPage, "New product");
    await adminPage.getByLabel("Category").fill("Garden");
    await adminPage.getByLabel("Price in dollars (e.g. 12.50)").fill("24.50");
    await adminPage.getByLabel("Stock (units on hand)").fill("7");
    await expecting([400], async () => {
      await adminPage.getByRole("button", { name: "Create product" }).click();
      await adminPage.locator("#product-name-error", { hasText: "must not be empty" }).waitFor();
    });
    await adminPage.getByLabel("Name").fill("Garden hose");
    await adminPage.getByRole("button", { name: "Create product" }).click();
    await notice(adminPage, "Created Garden hose.");
    await adminPage.getByRole("link", { name: "Edit Garden hose" }).waitFor();
    await shot(adminPage, "admin");
  });

  await step("customers see the new product and its edited price", async () => {
    await page.goto(`${BASE}/#/?category=Garden`);
    await page.getByRole("link", { name: "Garden hose" }).click();
    await page.locator(".facts .price", { hasText: "$24.50" }).waitFor();
    hose = page.url().split("/").pop();
    await adminPage.getByRole("link", { name: "Edit Garden hose" }).click();
    await heading(adminPage, "Edit Garden hose");
    await adminPage.getByLabel("Price in dollars (e.g. 12.50)").fill("19.99");
    await adminPage.getByRole("button", { name: "Save changes" }).click();
    await notice(adminPage, "Saved Garden hose.");
    await page.reload();
    await page.locator(".facts .price", { hasText: "$19.99" }).waitFor();
    check((await stockOf(hose)) === 7, "editing the price left the stock alone");
  });

  await step("the admin sees every order and ships and delivers one", async () => {
    const row = adminPage.locator(`[data-order-id="${shippedOrderId}"]`);
    await row.getByRole("button", { name: /^Mark shipped/ }).click();
    await notice(adminPage, "is shipped.");
    await row.getByRole("button", { name: /^Mark delivered/ }).click();
    await notice(adminPage, "is delivered.");
    await row.locator(".status", { hasText: "Delivered" }).waitFor();
    await page.goto(`${BASE}/#/orders/${shippedOrderId}`);
    await orderStatus(page, "Delivered");
  });

  await step("429 says how long to wait, 503 says to try again", async () => {
    // The stack's limits are set high for the tests, so these answers are
    // played by the browser's network layer, as the gateway writes them.
    const visitor = await newPage("visitor");
    const problem = (status, title, detail) => ({
      status,
      contentType: "application/problem+json",
      body: JSON.stringify({ type: "about:blank", title, status, detail, errors: [] }),
    });
    await visitor.route("**/users/login", (route) =>
      route.fulfill({ ...problem(429, "Too many requests", "rate limited"), headers: { "Retry-After": "7" } }),
    );
    await visitor.goto(`${BASE}/#/login`);
    await heading(visitor, "Log in");
    await visitor.getByLabel("Username or email").fill(customer.username);
    await visitor.getByLabel("Password").fill(customer.password);
    await expecting([429], async () => {
      await visitor.getByRole("button", { name: "Log in" }).click();
      await visitor.locator("p.alert", { hasText: "Please wait 7 seconds and try again." }).waitFor();
    });
    await visitor.route("**/products?*", (route) => route.fulfill(problem(503, "Service unavailable", "inventory is unavailable")));
    await expecting([503], async () => {
      await visitor.goto(`${BASE}/#/`);
      await heading(visitor, "Something went wrong");
      await visitor.getByText("Please try again in a moment.").waitFor();
    });
    await visitor.unroute("**/products?*");
    await visitor.getByRole("button", { name: "Try again" }).click();
    await heading(visitor, "Products");
  });

  await step("no horizontal scroll at 375 x 667", async () => {
    const phone = await newPage("phone", { width: 375, height: 667 });
    await phone.goto(`${BASE}/#/`);
    await heading(phone, "Products");
    await noHorizontalScroll(phone, "the catalogue");
    await contrastIsReadable(phone, "the catalogue");
    await phone.goto(`${BASE}/#/products/${rust.id}`);
    await heading(phone, "Rust in Action");
    await noHorizontalScroll(phone, "a product");
    await contrastIsReadable(phone, "a product");
    await phone.getByRole("button", { name: "Add to cart" }).click();
    await phone.goto(`${BASE}/#/cart`);
    await heading(phone, "Your cart");
    await noHorizontalScroll(phone, "the cart");
    await contrastIsReadable(phone, "the cart");
    await shot(phone, "phone-cart");
    await login(phone, customer);
    await phone.goto(`${BASE}/#/orders/${shippedOrderId}`);
    await orderStatus(phone, "Delivered");
    await noHorizontalScroll(phone, "an order");
    await contrastIsReadable(phone, "an order");
    await adminPage.setViewportSize({ width: 375, height: 667 });
    await adminPage.goto(`${BASE}/#/admin`);
    await heading(adminPage, "Administration");
    await noHorizontalScroll(adminPage, "the admin page");
  });

  assertNoProblems();
  writeFileSync(
    RESULTS_FILE,
    JSON.stringify({ customer_token: await tokenOf(page), customer_orders: ordersPlaced }),
  );
  console.log(`all storefront checks passed in ${Date.now() - started} ms; screenshots in ${SCREENSHOTS}`);
} catch (error) {
  console.error(error.stack || String(error));
  if (problems.length) console.error(`also:\n  ${problems.join("\n  ")}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
