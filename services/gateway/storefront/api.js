// The only module that talks to the server. Every REST call the page makes is
// declared in CALLS (method, path template, query parameters and headers it
// may send); e2e/tests/e2e/storefront.rs checks each against /openapi.json and
// that no other file calls fetch. Keep CALLS strict JSON for that test.

export const CALLS = {
  "listProducts": { "method": "GET", "path": "/products", "query": ["page", "page_size", "category"] },
  "getProduct": { "method": "GET", "path": "/products/{id}" },
  "createProduct": { "method": "POST", "path": "/products" },
  "updateProduct": { "method": "PATCH", "path": "/products/{id}" },
  "deleteProduct": { "method": "DELETE", "path": "/products/{id}" },
  "register": { "method": "POST", "path": "/users/register" },
  "login": { "method": "POST", "path": "/users/login" },
  "createOrder": { "method": "POST", "path": "/orders", "headers": ["Idempotency-Key"] },
  "listOrders": { "method": "GET", "path": "/orders", "query": ["page", "page_size"] },
  "getOrder": { "method": "GET", "path": "/orders/{id}" },
  "updateOrderStatus": { "method": "PATCH", "path": "/orders/{id}" },
  "cancelOrder": { "method": "POST", "path": "/orders/{id}/cancel" }
};
// end of CALLS

/** A failed call: the problem+json the API answered, or a network failure (status 0). */
export class ApiError extends Error {
  constructor(status, problem, retryAfter) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.title = problem.title || "";
    this.detail = problem.detail || "";
    /** [{field, message}] from problem+json `errors`. */
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
    /** Seconds to wait before retrying (429's Retry-After), or null. */
    this.retryAfter = retryAfter;
  }

  /** A sentence for the user that says what to do. */
  get userMessage() {
    switch (this.status) {
      case 0:
        return "The shop could not be reached. Check your connection and try again.";
      case 409:
        return this.detail || "That conflicts with the shop's current state (for example, not enough stock).";
      case 429:
        return this.retryAfter === null
          ? "Too many requests. Please wait a moment and try again."
          : `Too many requests. Please wait ${this.retryAfter} second${this.retryAfter === 1 ? "" : "s"} and try again.`;
      case 502:
      case 503:
      case 504:
        return "The shop is busy or partly unavailable. Please try again in a moment.";
      default:
        if (this.status >= 500) return "Something went wrong on our side. Please try again.";
        return this.detail || this.title || `The request failed (HTTP ${this.status}).`;
    }
  }
}

let tokenSource = () => null;
let onSessionExpired = () => {};

/**
 * `token()` gives the bearer token to send (or null); `expired()` is told when
 * the API refuses a token we sent (401): the session is over.
 */
export function configureAuth(token, expired) {
  tokenSource = token;
  onSessionExpired = expired;
}

function fillPath(template, params) {
  return template.replace(/\{(\w+)\}/g, (_, name) => {
    if (params[name] === undefined) throw new Error(`missing path parameter ${name}`);
    return encodeURIComponent(params[name]);
  });
}

/**
 * Calls CALLS[name]. Resolves to the parsed JSON body (null when empty) and,
 * with `withResponse`, to {body, status, headers}; rejects with ApiError.
 */
export async function call(name, { params = {}, query = {}, body, headers = {}, withResponse = false } = {}) {
  const declared = CALLS[name];
  if (!declared) throw new Error(`undeclared API call ${name}`);
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (!(declared.query || []).includes(key)) throw new Error(`${name} does not declare query parameter ${key}`);
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const sent = { Accept: "application/json" };
  for (const [key, value] of Object.entries(headers)) {
    if (!(declared.headers || []).includes(key)) throw new Error(`${name} does not declare header ${key}`);
    sent[key] = value;
  }
  if (body !== undefined) sent["Content-Type"] = "application/json";
  const token = tokenSource();
  if (token) sent.Authorization = `Bearer ${token}`;

  const queryString = search.toString();
  const url = fillPath(declared.path, params) + (queryString ? `?${queryString}` : "");
  let response;
  try {
    response = await fetch(url, {
      method: declared.method,
      headers: sent,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, {}, null);
  }
  const text = await response.text();
  let parsed = null;
  if (text) {
    try {
      parsed = JSON.parse(text);
    } catch {
      parsed = { detail: text.slice(0, 200) };
    }
  }
  if (!response.ok) {
    const retry = Number.parseInt(response.headers.get("Retry-After") ?? "", 10);
    const error = new ApiError(response.status, parsed || {}, Number.isFinite(retry) ? retry : null);
    // A refused token means the session is over; a failed login is just that.
    if (response.status === 401 && token) onSessionExpired();
    throw error;
  }
  return withResponse ? { body: parsed, status: response.status, headers: response.headers } : parsed;
}
