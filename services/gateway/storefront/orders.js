// A customer's orders: the history, and one order watched until it settles.

import { call } from "./api.js";
import { alertBox, busy, h, money, showAlert } from "./dom.js";

const PAGE_SIZE = 20;
/** How often a PENDING order is asked for again, growing to the last value. */
const POLL_DELAYS_MS = [500, 1000, 1000, 2000, 2000, 5000];

const STATUS_TEXT = {
  PENDING: "Pending: checking stock",
  CONFIRMED: "Confirmed",
  REJECTED: "Rejected",
  CANCELLED: "Cancelled",
  SHIPPED: "Shipped",
  DELIVERED: "Delivered",
};

export function statusBadge(status) {
  return h("span", { class: `status status-${status.toLowerCase()}` }, STATUS_TEXT[status] ?? status);
}

function when(timestamp) {
  return timestamp ? new Date(timestamp).toLocaleString() : "";
}

export async function ordersPage({ query, show }) {
  const page = Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1);
  const result = await call("listOrders", { query: { page, page_size: PAGE_SIZE } });
  const pages = Math.max(1, Math.ceil(result.total / PAGE_SIZE));
  show(
    "My orders",
    result.orders.length
      ? h(
          "ul",
          { class: "lines" },
          result.orders.map((order) =>
            h(
              "li",
              { class: "line" },
              h("a", { href: `#/orders/${order.id}`, class: "name" }, `Order of ${when(order.created_at)}`),
              statusBadge(order.status),
              h("span", { class: "price" }, money(order.total)),
            ),
          ),
        )
      : h("p", {}, "No orders yet. ", h("a", { href: "#/" }, "Start shopping")),
    pages > 1 &&
      h(
        "nav",
        { class: "pager", "aria-label": "Pages" },
        page > 1 && h("a", { href: `#/orders?page=${page - 1}` }, "← Newer"),
        h("span", {}, `Page ${page} of ${pages}`),
        page < pages && h("a", { href: `#/orders?page=${page + 1}` }, "Older →"),
      ),
  );
}

export async function orderPage({ params: [id], show, current }) {
  let order = await call("getOrder", { params: { id } });
  const names = await productNames(order.items.map((item) => item.product_id));
  const status = h("p", { class: "order-status", role: "status", "aria-live": "polite", id: "order-status" });
  const reason = h("p", { class: "alert", id: "order-reason", hidden: true });
  const box = alertBox();
  const cancel = h("button", { type: "button", class: "secondary", hidden: true, id: "cancel-order" }, "Cancel order");
  const total = h("p", { class: "total", id: "order-total" });

  const showStatus = () => {
    status.replaceChildren("Status: ", statusBadge(order.status));
    reason.hidden = !(order.status === "REJECTED" && order.status_reason);
    reason.textContent = order.status_reason ? `Reason: ${order.status_reason}` : "";
    total.textContent = `Total: ${money(order.total)}`;
    // Only a confirmed order may be cancelled (a pending one is still being checked).
    cancel.hidden = order.status !== "CONFIRMED";
  };

  cancel.addEventListener("click", () =>
    busy(cancel, async () => {
      showAlert(box, "");
      try {
        order = await call("cancelOrder", { params: { id } });
        showStatus();
        status.focus();
      } catch (error) {
        if (error.status !== 401) showAlert(box, error.userMessage);
      }
    }),
  );

  showStatus();
  show(
    "Your order",
    status,
    reason,
    h(
      "ul",
      { class: "lines" },
      order.items.map((item) =>
        h(
          "li",
          { class: "line" },
          h("a", { href: `#/products/${item.product_id}`, class: "name" }, names.get(item.product_id)),
          h("span", {}, `${item.quantity} × ${money(item.unit_price)}`),
        ),
      ),
    ),
    total,
    h("p", { class: "hint" }, `Order number ${order.id}, placed ${when(order.created_at)}.`),
    box,
    cancel,
    h("p", {}, h("a", { href: "#/orders" }, "← All my orders")),
  );
  status.setAttribute("tabindex", "-1");
  await watch(id, current, () => order, (next) => {
    order = next;
    showStatus();
  });
}

/** Product id -> name; a product deleted since is named as such. */
async function productNames(ids) {
  const names = new Map();
  await Promise.all(
    [...new Set(ids)].map(async (id) => {
      try {
        names.set(id, (await call("getProduct", { params: { id } })).name);
      } catch (error) {
        if (error.status !== 404) throw error;
        names.set(id, "A product no longer sold");
      }
    }),
  );
  return names;
}

/** Asks for the order again while it is PENDING and this page is the one shown. */
async function watch(id, pageShown, order, update) {
  for (let attempt = 0; order().status === "PENDING"; attempt++) {
    await new Promise((resolve) => setTimeout(resolve, POLL_DELAYS_MS[Math.min(attempt, POLL_DELAYS_MS.length - 1)]));
    if (!pageShown()) return;
    try {
      update(await call("getOrder", { params: { id } }));
    } catch (error) {
      // A busy service is asked again later; anything else ends the watch.
      if (![0, 429, 502, 503, 504].includes(error.status)) return;
    }
  }
}
