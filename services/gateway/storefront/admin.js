// Administration: products (create, edit, set stock, delete) and every
// customer's orders (ship, deliver).

import { call } from "./api.js";
import { alertBox, busy, field, h, money, navigate, showAlert, showErrors } from "./dom.js";
import { statusBadge } from "./orders.js";

const PAGE_SIZE = 20;
/** The fulfilment step an admin may take from each status. */
const NEXT_STEP = { CONFIRMED: ["SHIPPED", "Mark shipped"], SHIPPED: ["DELIVERED", "Mark delivered"] };

function pageOf(query, name) {
  return Math.max(1, Number.parseInt(query.get(name) || "1", 10) || 1);
}

function pager(label, query, name, page, total) {
  const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
  if (pages === 1) return null;
  const link = (to, text) => {
    const next = new URLSearchParams(query);
    next.set(name, String(to));
    return h("a", { href: `#/admin?${next}` }, text);
  };
  return h(
    "nav",
    { class: "pager", "aria-label": label },
    page > 1 && link(page - 1, "← Previous"),
    h("span", {}, `Page ${page} of ${pages}`),
    page < pages && link(page + 1, "Next →"),
  );
}

export async function adminPage({ query, show }) {
  const productPage = pageOf(query, "products");
  const orderPage = pageOf(query, "orders");
  const [products, orders] = await Promise.all([
    call("listProducts", { query: { page: productPage, page_size: PAGE_SIZE } }),
    call("listOrders", { query: { page: orderPage, page_size: PAGE_SIZE } }),
  ]);

  const productRows = products.products.map((product) => {
    const box = alertBox();
    const remove = h("button", { type: "button", class: "danger", "aria-label": `Delete ${product.name}` }, "Delete");
    remove.addEventListener("click", () =>
      busy(remove, async () => {
        // A second press confirms, so a slip of the finger deletes nothing.
        if (!remove.dataset.armed) {
          remove.dataset.armed = "yes";
          remove.textContent = "Press again to delete";
          return;
        }
        try {
          await call("deleteProduct", { params: { id: product.id } });
          navigate(`#/admin?${query}`, `Deleted ${product.name}.`);
        } catch (error) {
          if (error.status !== 401) showAlert(box, error.userMessage);
        }
      }),
    );
    return h(
      "li",
      { class: "line" },
      h("a", { href: `#/admin/products/${product.id}`, class: "name", "aria-label": `Edit ${product.name}` }, product.name),
      h("span", {}, product.category),
      h("span", { class: "price" }, money(product.price)),
      h("span", {}, `Stock ${product.stock}`),
      remove,
      box,
    );
  });

  const orderRows = orders.orders.map((order) => {
    const box = alertBox();
    const step = NEXT_STEP[order.status];
    let action = null;
    if (step) {
      action = h("button", { type: "button", "aria-label": `${step[1]}: order ${order.id}` }, step[1]);
      action.addEventListener("click", () =>
        busy(action, async () => {
          try {
            await call("updateOrderStatus", { params: { id: order.id }, body: { status: step[0] } });
            navigate(`#/admin?${query}`, `Order ${order.id} is ${step[0].toLowerCase()}.`);
          } catch (error) {
            if (error.status !== 401) showAlert(box, error.userMessage);
          }
        }),
      );
    }
    return h(
      "li",
      { class: "line", "data-order-id": order.id },
      h("span", { class: "name id" }, `Order ${order.id}`),
      h("span", { class: "id" }, `Customer ${order.user_id}`),
      statusBadge(order.status),
      h("span", { class: "price" }, money(order.total)),
      action,
      box,
    );
  });

  show(
    "Administration",
    h("h2", {}, "Products"),
    h("p", {}, h("a", { href: "#/admin/products/new", class: "button" }, "New product")),
    h("ul", { class: "lines", id: "admin-products" }, productRows),
    pager("Product pages", query, "products", productPage, products.total),
    h("h2", {}, "Orders"),
    orderRows.length ? h("ul", { class: "lines", id: "admin-orders" }, orderRows) : h("p", {}, "No orders yet."),
    pager("Order pages", query, "orders", orderPage, orders.total),
  );
}

/** A two-decimal amount as typed ("12.5", "12.50") to the JSON number the API takes. */
function parsePrice(text) {
  return /^\d+(\.\d{1,2})?$/.test(text.trim()) ? Number(text.trim()) : Number.NaN;
}

export async function productForm({ params: [id], show }) {
  const existing = id ? await call("getProduct", { params: { id } }) : null;
  const box = alertBox();
  const submit = h("button", { type: "submit", class: "primary" }, existing ? "Save changes" : "Create product");
  const form = h(
    "form",
    { class: "stack", novalidate: true },
    box,
    field("product", "name", "Name", { required: true, maxlength: "200", value: existing?.name }),
    field("product", "category", "Category", { required: true, maxlength: "100", value: existing?.category }),
    field("product", "price", "Price in dollars (e.g. 12.50)", {
      required: true,
      inputmode: "decimal",
      value: existing ? Number(existing.price).toFixed(2) : undefined,
    }),
    field("product", "stock", "Stock (units on hand)", {
      required: true,
      type: "number",
      min: "0",
      inputmode: "numeric",
      value: existing ? String(existing.stock) : "0",
    }),
    submit,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      const values = {
        name: form.elements.name.value.trim(),
        category: form.elements.category.value.trim(),
        price: parsePrice(form.elements.price.value),
        stock: Number(form.elements.stock.value),
      };
      const local = [];
      if (Number.isNaN(values.price)) local.push({ field: "price", message: "must be an amount with at most two decimals" });
      if (!Number.isInteger(values.stock)) local.push({ field: "stock", message: "must be a whole number" });
      if (local.length) {
        showErrors(form, box, { errors: local, userMessage: "" });
        return;
      }
      try {
        if (existing) {
          // Only what changed: resending the stock would overwrite the sales
          // made since this form was opened.
          const changes = {};
          for (const key of ["name", "category", "stock"]) if (values[key] !== existing[key]) changes[key] = values[key];
          if (values.price !== Number(existing.price)) changes.price = values.price;
          if (Object.keys(changes).length === 0) {
            showAlert(box, "Nothing changed.");
            return;
          }
          await call("updateProduct", { params: { id }, body: changes });
          navigate("#/admin", `Saved ${values.name}.`);
        } else {
          const created = await call("createProduct", { body: values });
          navigate("#/admin", `Created ${created.name}.`);
        }
      } catch (error) {
        showErrors(form, box, error);
      }
    });
  });
  show(existing ? `Edit ${existing.name}` : "New product", form, h("p", {}, h("a", { href: "#/admin" }, "← Administration")));
}
