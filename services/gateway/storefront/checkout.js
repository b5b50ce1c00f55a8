// The cart page and the checkout.

import { call } from "./api.js";
import * as cart from "./cart.js";
import * as session from "./session.js";
import { alertBox, busy, cents, h, money, navigate, showAlert } from "./dom.js";

export async function cartPage(view) {
  const { show } = view;
  const lines = cart.lines();
  if (lines.length === 0) {
    show("Your cart", h("p", {}, "Your cart is empty. "), h("a", { href: "#/" }, "Browse the products"));
    return;
  }
  const box = alertBox();
  const total = h("p", { class: "total", id: "cart-total" });
  const updateTotal = () => {
    const sum = cart.lines().reduce((s, l) => s + cents(l.price) * l.quantity, 0);
    total.textContent = `Estimated total: ${money(sum / 100)}`;
  };

  const rows = lines.map((line, index) => {
    const id = `qty-${index}`;
    const error = h("p", { class: "field-error", id: `${id}-error`, "data-line-error": String(index) });
    const quantity = h("input", {
      id,
      name: `items[${index}].quantity`,
      type: "number",
      min: "1",
      max: String(cart.MAX_QUANTITY),
      value: String(line.quantity),
      inputmode: "numeric",
      "aria-describedby": `${id}-error`,
    });
    quantity.addEventListener("change", () => {
      const wanted = Number.parseInt(quantity.value, 10);
      if (!Number.isInteger(wanted) || wanted < 1 || wanted > cart.MAX_QUANTITY) {
        quantity.setAttribute("aria-invalid", "true");
        error.textContent = `Quantity must be a whole number from 1 to ${cart.MAX_QUANTITY}.`;
        return;
      }
      quantity.removeAttribute("aria-invalid");
      error.textContent = "";
      cart.setQuantity(line.product_id, wanted);
      updateTotal();
    });
    const row = h(
      "li",
      { class: "line", "data-product-id": line.product_id },
      h("a", { href: `#/products/${line.product_id}`, class: "name" }, line.name),
      h("span", { class: "price" }, money(line.price)),
      h("span", { class: "qty" }, h("label", { for: id }, `Quantity of ${line.name}`), quantity),
      h(
        "button",
        {
          type: "button",
          class: "secondary",
          "aria-label": `Remove ${line.name}`,
          onclick: () => {
            cart.remove(line.product_id);
            cartPage(view);
          },
        },
        "Remove",
      ),
      error,
    );
    return row;
  });
  updateTotal();

  const place = h("button", { type: "button", id: "place-order", class: "primary" }, "Place order");
  place.addEventListener("click", () =>
    busy(place, async () => {
      showAlert(box, "");
      for (const slot of document.querySelectorAll("[data-line-error]")) slot.textContent = "";
      if (!session.token()) {
        navigate("#/login?next=%23%2Fcart", "Please log in to place your order; your cart is kept.");
        return;
      }
      try {
        const order = await call("createOrder", {
          body: cart.orderBody(),
          headers: { "Idempotency-Key": cart.checkoutKey() },
        });
        cart.clear();
        navigate(`#/orders/${order.id}`, "Thank you! Your order is placed.");
      } catch (error) {
        if (error.status === 401) return;
        showLineErrors(error, lines);
        showAlert(box, withNames(error.userMessage, lines));
        box.focus();
      }
    }),
  );

  show(
    "Your cart",
    h("ul", { class: "lines" }, rows),
    total,
    h("p", { class: "hint" }, "Prices are confirmed when the order is placed."),
    box,
    place,
  );
}

/** The API names products by id; the customer knows them by name. */
function withNames(text, lines) {
  return lines.reduce((named, line) => named.replaceAll(line.product_id, `“${line.name}”`), text);
}

/**
 * Beside each line what the API said about it: `errors[]` entries about
 * `items[i]...`, and the 409's "product <id> has N left, M requested".
 */
function showLineErrors(error, lines) {
  const slot = (index) => document.querySelector(`[data-line-error="${index}"]`);
  for (const { field, message } of error.errors) {
    const match = /^items\[(\d+)\]/.exec(field);
    if (match && slot(match[1])) slot(match[1]).textContent = `${lines[Number(match[1])]?.name ?? "This item"}: ${message}.`;
  }
  if (error.status !== 409) return;
  for (const [, id, left, requested] of error.detail.matchAll(/product (\S+) has (\d+) left, (\d+) requested/g)) {
    const index = lines.findIndex((line) => line.product_id === id);
    if (index >= 0) slot(index).textContent = `Only ${left} left; you asked for ${requested}.`;
  }
}
