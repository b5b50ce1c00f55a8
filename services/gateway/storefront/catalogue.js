// The catalogue (category filter, paging) and a product's page.

import { call } from "./api.js";
import * as cart from "./cart.js";
import { alertBox, busy, h, money, notice, showAlert } from "./dom.js";

const PAGE_SIZE = 12;

function catalogueHash(category, page) {
  const query = new URLSearchParams();
  if (category) query.set("category", category);
  if (page > 1) query.set("page", String(page));
  const search = query.toString();
  return search ? `#/?${search}` : "#/";
}

function stockText(product) {
  if (product.stock <= 0) return "Out of stock";
  return product.stock < 5 ? `Only ${product.stock} left` : "In stock";
}

export async function catalogue({ query, show }) {
  const category = query.get("category") || "";
  const page = Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1);
  const result = await call("listProducts", { query: { page, page_size: PAGE_SIZE, category } });
  const pages = Math.max(1, Math.ceil(result.total / PAGE_SIZE));

  const input = h("input", { id: "category", name: "category", value: category, autocomplete: "off" });
  const filter = h(
    "form",
    {
      class: "filter",
      role: "search",
      onsubmit: (event) => {
        event.preventDefault();
        window.location.hash = catalogueHash(input.value.trim(), 1);
      },
    },
    h("label", { for: "category" }, "Category"),
    input,
    h("button", { type: "submit" }, "Filter"),
    category && h("a", { href: "#/", class: "button secondary" }, "Show all"),
  );

  const cards = result.products.map((product) =>
    h(
      "li",
      { class: "card" },
      h("h2", {}, h("a", { href: `#/products/${product.id}` }, product.name)),
      h("p", { class: "price" }, money(product.price)),
      h("p", { class: product.stock > 0 ? "stock" : "stock out" }, stockText(product)),
      h("p", {}, h("a", { href: catalogueHash(product.category, 1), class: "category" }, product.category)),
    ),
  );

  const summary = category
    ? `${result.total} product${result.total === 1 ? "" : "s"} in “${category}”`
    : `${result.total} product${result.total === 1 ? "" : "s"}`;
  show(
    category ? `Products: ${category}` : "Products",
    filter,
    h("p", { class: "summary", role: "status" }, summary),
    cards.length ? h("ul", { class: "cards" }, cards) : h("p", {}, "No products here yet."),
    pages > 1 &&
      h(
        "nav",
        { class: "pager", "aria-label": "Pages" },
        page > 1 && h("a", { href: catalogueHash(category, page - 1), rel: "prev" }, "← Previous"),
        h("span", {}, `Page ${page} of ${pages}`),
        page < pages && h("a", { href: catalogueHash(category, page + 1), rel: "next" }, "Next →"),
      ),
  );
}

export async function productPage({ params: [id], show }) {
  const product = await call("getProduct", { params: { id } });
  const available = product.stock > 0;
  const inCart = cart.lines().find((l) => l.product_id === product.id)?.quantity ?? 0;
  const quantity = h("input", {
    id: "quantity",
    name: "quantity",
    type: "number",
    min: "1",
    max: String(cart.MAX_QUANTITY),
    value: "1",
    inputmode: "numeric",
    required: true,
  });
  const box = alertBox();
  const add = h("button", { type: "submit", disabled: !available }, "Add to cart");
  const form = h(
    "form",
    {
      class: "buy",
      onsubmit: (event) => {
        event.preventDefault();
        busy(add, async () => {
          const wanted = Number.parseInt(quantity.value, 10);
          if (!Number.isInteger(wanted) || wanted < 1) {
            showAlert(box, "Quantity must be a whole number of 1 or more.");
            quantity.setAttribute("aria-invalid", "true");
            quantity.focus();
            return;
          }
          quantity.removeAttribute("aria-invalid");
          showAlert(box, "");
          cart.add(product, wanted);
          notice(`Added ${wanted} × ${product.name} to the cart.`);
        });
      },
    },
    h("label", { for: "quantity" }, "Quantity"),
    quantity,
    add,
    box,
  );
  show(
    product.name,
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Price"),
      h("dd", { class: "price" }, money(product.price)),
      h("dt", {}, "Availability"),
      h("dd", { class: available ? "stock" : "stock out", id: "stock" }, available ? `${product.stock} in stock` : "Out of stock"),
      h("dt", {}, "Category"),
      h("dd", {}, h("a", { href: catalogueHash(product.category, 1) }, product.category)),
    ),
    available ? form : h("p", { class: "stock out" }, "This product is out of stock and cannot be ordered."),
    inCart > 0 && h("p", {}, `You have ${inCart} in your `, h("a", { href: "#/cart" }, "cart"), "."),
    h("p", {}, h("a", { href: "#/" }, "← All products")),
  );
}
