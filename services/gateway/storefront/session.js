// Who is logged in: the token from POST /users/login, kept for this browser
// session only (sessionStorage: closing the tab logs out).

const KEY = "storefront.session";

/** {token, expiresAt (ms), user} or null. */
export function current() {
  try {
    const session = JSON.parse(sessionStorage.getItem(KEY) || "null");
    return session && typeof session.token === "string" ? session : null;
  } catch {
    return null;
  }
}

/** The token while it is still valid by our clock; the server decides in the end (401). */
export function token() {
  const session = current();
  return session && Date.now() < session.expiresAt ? session.token : null;
}

/** True when there was a session and its time is up. */
export function hasExpired() {
  const session = current();
  return Boolean(session) && Date.now() >= session.expiresAt;
}

export function start(login) {
  const session = { token: login.token, expiresAt: Date.now() + login.expires_in * 1000, user: login.user };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  return session;
}

export function end() {
  sessionStorage.removeItem(KEY);
}

export function user() {
  return current()?.user ?? null;
}

export function isAdmin() {
  return user()?.role === "admin";
}
