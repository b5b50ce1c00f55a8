// The cart, kept in localStorage so it survives reloads and restarts. Each
// line remembers the product's name and price when added, for display only:
// the order's prices and total come from the server.
//
// The checkout's Idempotency-Key belongs to the cart's content: the same cart
// sent again (a double click, a retry after a lost answer, a reload) sends the
// same key and gets the first order back; any change to the cart makes a new key.

const CART = "storefront.cart";
const CHECKOUT = "storefront.checkout";
const MAX_QUANTITY = 1000;

/** [{product_id, name, price, quantity}] */
export function lines() {
  try {
    const stored = JSON.parse(localStorage.getItem(CART) || "[]");
    return Array.isArray(stored) ? stored.filter((l) => l && l.product_id && l.quantity > 0) : [];
  } catch {
    return [];
  }
}

const listeners = new Set();

/** `listener(lines)` after every change. */
export function onChange(listener) {
  listeners.add(listener);
}

function save(next) {
  localStorage.setItem(CART, JSON.stringify(next));
  for (const listener of listeners) listener(next);
}

export function count() {
  return lines().reduce((sum, line) => sum + line.quantity, 0);
}

/** Adds `quantity` of `product` (a Product from the API). */
export function add(product, quantity) {
  const next = lines();
  const line = next.find((l) => l.product_id === product.id);
  if (line) {
    line.quantity = Math.min(MAX_QUANTITY, line.quantity + quantity);
    line.name = product.name;
    line.price = product.price;
  } else {
    next.push({ product_id: product.id, name: product.name, price: product.price, quantity });
  }
  save(next);
}

export function setQuantity(productId, quantity) {
  save(lines().map((l) => (l.product_id === productId ? { ...l, quantity } : l)));
}

export function remove(productId) {
  save(lines().filter((l) => l.product_id !== productId));
}

export function clear() {
  localStorage.removeItem(CHECKOUT);
  save([]);
}

/** The body of POST /orders for this cart. */
export function orderBody() {
  return { items: lines().map((l) => ({ product_id: l.product_id, quantity: l.quantity })) };
}

/** The Idempotency-Key of this cart's content, made on first use. */
export function checkoutKey() {
  const content = JSON.stringify(orderBody());
  try {
    const stored = JSON.parse(localStorage.getItem(CHECKOUT) || "null");
    if (stored && stored.content === content) return stored.key;
  } catch {
    // A damaged entry is replaced below.
  }
  const key = randomUuid();
  localStorage.setItem(CHECKOUT, JSON.stringify({ content, key }));
  return key;
}

/** A random (v4) UUID; crypto.randomUUID exists only on HTTPS and localhost. */
function randomUuid() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export { MAX_QUANTITY };
