// Building the page without innerHTML (API data is always text, never markup),
// and showing API errors next to what caused them.

/** h("a", {href: "#/"}, "text", child...): an element; null/false children are skipped. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/**
 * Replaces what `main` shows, names the page and moves focus to its heading.
 * Views call it as `show`, which app.js guards against drawing a stale page.
 */
export function render(title, ...children) {
  const main = document.getElementById("main");
  const heading = h("h1", { tabindex: "-1" }, title);
  // Like h(), leaves out the parts a view switched off (`cond && part`).
  main.replaceChildren(heading, ...children.filter((child) => child !== null && child !== undefined && child !== false));
  document.title = `${title} · Shop`;
  heading.focus();
}

const moneyFormat = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });

/** Money arrives as a JSON number with two decimals; shown in dollars. */
export function money(amount) {
  return moneyFormat.format(Number(amount));
}

/** Integer cents of a two-decimal amount, so that sums are exact. */
export function cents(amount) {
  return Math.round(Number(amount) * 100);
}

/** A status message for everyone (screen readers hear it once). */
export function notice(text, kind = "info") {
  const el = document.getElementById("notice");
  el.textContent = text;
  el.dataset.kind = kind;
}

let flash = null;

/** Goes to `hash`, where `message` is shown (the page after shows none). */
export function navigate(hash, message = "", kind = "info") {
  flash = { message, kind };
  if (window.location.hash === hash) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else window.location.hash = hash;
}

/** Shows the message the last navigate() left for this page, or clears it. */
export function showFlash() {
  notice(flash?.message ?? "", flash?.kind);
  flash = null;
}

/** The region above a form or action that says what went wrong. */
export function alertBox() {
  return h("p", { class: "alert", role: "alert", tabindex: "-1", hidden: true });
}

export function showAlert(box, text) {
  box.textContent = text;
  box.hidden = !text;
}

/**
 * A labelled input with its error slot: the error's id is the input's
 * aria-describedby, so it is read with the field.
 */
export function field(form, name, label, attrs = {}) {
  const id = `${form}-${name}`;
  return h(
    "div",
    { class: "field" },
    h("label", { for: id }, label),
    h("input", { id, name, "aria-describedby": `${id}-error`, ...attrs }),
    h("p", { class: "field-error", id: `${id}-error`, "data-error-for": name }),
  );
}

/** Clears the errors a form shows. */
export function clearErrors(form, box) {
  for (const slot of form.querySelectorAll("[data-error-for]")) slot.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
  showAlert(box, "");
}

/**
 * Shows an ApiError on a form: each `errors[]` entry beside its field, the
 * rest (and a summary) in the alert box; focus goes to the first bad field.
 */
export function showErrors(form, box, error) {
  clearErrors(form, box);
  const unplaced = [];
  let first = null;
  for (const { field: name, message } of error.errors || []) {
    const slot = form.querySelector(`[data-error-for="${CSS.escape(name)}"]`);
    const input = form.elements.namedItem(name);
    if (slot && input) {
      slot.textContent = `${label(input)} ${message}.`;
      input.setAttribute("aria-invalid", "true");
      first ??= input;
    } else {
      unplaced.push(`${name} ${message}.`);
    }
  }
  const summary = first ? "Please correct the fields marked below." : error.userMessage;
  showAlert(box, [summary, ...unplaced].join(" "));
  (first || box).focus?.();
}

function label(input) {
  return input.labels?.[0]?.textContent || input.name;
}

/** Disables `button` while `work` runs (a second click does nothing). */
export async function busy(button, work) {
  if (button.disabled) return;
  button.disabled = true;
  button.setAttribute("aria-busy", "true");
  try {
    return await work();
  } finally {
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }
}
