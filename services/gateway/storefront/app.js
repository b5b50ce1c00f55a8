// The page's entry point: hash routes (#/products/<id>, ...) so the server
// serves only `/` and the assets, the navigation, and the session's end.

import { configureAuth } from "./api.js";
import * as cart from "./cart.js";
import * as session from "./session.js";
import { h, navigate, render, showFlash } from "./dom.js";
import { catalogue, productPage } from "./catalogue.js";
import { loginPage, registerPage } from "./account.js";
import { cartPage } from "./checkout.js";
import { orderPage, ordersPage } from "./orders.js";
import { adminPage, productForm } from "./admin.js";

const EXPIRED_MESSAGE = "Your session has expired. Please log in again.";

/** [pattern, view, needs] in match order; `needs` is "user" or "admin". */
const ROUTES = [
  [/^\/$/, catalogue],
  [/^\/products\/([^/]+)$/, productPage],
  [/^\/cart$/, cartPage],
  [/^\/login$/, loginPage],
  [/^\/register$/, registerPage],
  [/^\/orders$/, ordersPage, "user"],
  [/^\/orders\/([^/]+)$/, orderPage, "user"],
  [/^\/admin$/, adminPage, "admin"],
  [/^\/admin\/products\/new$/, productForm, "admin"],
  [/^\/admin\/products\/([^/]+)$/, productForm, "admin"],
];

/** The current route: its path and query (`#/?category=Books&page=2`). */
function location() {
  const [path, search = ""] = window.location.hash.replace(/^#/, "").split("?");
  return { path: path || "/", query: new URLSearchParams(search) };
}

/** Goes to the login page, coming back here after logging in. */
function toLogin(message) {
  const here = window.location.hash || "#/";
  const next = here.startsWith("#/login") ? "#/" : here;
  navigate(`#/login?next=${encodeURIComponent(next)}`, message, "error");
}

configureAuth(session.token, () => {
  session.end();
  updateNav();
  toLogin(EXPIRED_MESSAGE);
});

function updateNav() {
  const user = session.user();
  const signedIn = Boolean(session.token());
  for (const el of document.querySelectorAll("[data-signed-in]")) el.hidden = !signedIn;
  for (const el of document.querySelectorAll("[data-signed-out]")) el.hidden = signedIn;
  for (const el of document.querySelectorAll("[data-admin]")) el.hidden = !(signedIn && user?.role === "admin");
  document.getElementById("who").textContent = signedIn ? `(${user.username})` : "";
  document.getElementById("cart-count").textContent = String(cart.count());
}

function markCurrent(path) {
  const section = path.split("/")[1] || "catalogue";
  const names = { products: "catalogue", "": "catalogue" };
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === (names[section] ?? section)) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

/** Counts route() calls: a view still loading when the next page opens must not draw over it. */
let views = 0;

async function route() {
  const id = ++views;
  const current = () => id === views;
  const show = (title, ...children) => {
    if (current()) render(title, ...children);
  };
  const { path, query } = location();
  showFlash();
  updateNav();
  markCurrent(path);
  for (const [pattern, view, needs] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    if (needs && !session.token()) {
      const expired = session.hasExpired();
      session.end();
      updateNav();
      toLogin(expired ? EXPIRED_MESSAGE : "Please log in to see this page.");
      return;
    }
    if (needs === "admin" && !session.isAdmin()) {
      show("Not allowed", h("p", {}, "This page is for administrators."));
      return;
    }
    try {
      await view({ params: match.slice(1).map(decodeURIComponent), query, refreshNav: updateNav, show, current });
    } catch (error) {
      // A view that could not load says why, instead of a blank page.
      if (error?.status === 401) return;
      show(
        "Something went wrong",
        h("p", { role: "alert" }, error?.userMessage ?? String(error)),
        h("button", { type: "button", onclick: route }, "Try again"),
      );
    }
    return;
  }
  show("Page not found", h("p", {}, "There is no such page. "), h("a", { href: "#/" }, "Back to the products"));
}

window.addEventListener("hashchange", route);
cart.onChange(updateNav);
// Another tab changed the cart or logged in.
window.addEventListener("storage", updateNav);
document.getElementById("logout").addEventListener("click", () => {
  session.end();
  updateNav();
  navigate("#/", "You are logged out.");
});
route();
