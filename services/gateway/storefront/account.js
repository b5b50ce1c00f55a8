// Logging in and registering.

import { call } from "./api.js";
import * as session from "./session.js";
import { alertBox, busy, field, h, navigate, showErrors } from "./dom.js";

/** Where to go after logging in: a page of this shop only. */
function nextHash(query) {
  const next = query.get("next") || "#/";
  return next.startsWith("#/") && !next.startsWith("#/login") ? next : "#/";
}

export async function loginPage({ query, refreshNav, show }) {
  const box = alertBox();
  const submit = h("button", { type: "submit" }, "Log in");
  const form = h(
    "form",
    { class: "stack", novalidate: true },
    box,
    field("login", "username", "Username or email", { autocomplete: "username", required: true }),
    field("login", "password", "Password", { type: "password", autocomplete: "current-password", required: true }),
    submit,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      try {
        const login = await call("login", {
          body: { username: form.elements.username.value.trim(), password: form.elements.password.value },
        });
        session.start(login);
        refreshNav();
        navigate(nextHash(query), `Welcome, ${login.user.username}.`);
      } catch (error) {
        if (error.status === 401) error.errors = [{ field: "password", message: "does not match that user" }];
        showErrors(form, box, error);
      }
    });
  });
  show("Log in", form, h("p", {}, "New here? ", h("a", { href: "#/register" }, "Create an account"), "."));
}

export async function registerPage({ show }) {
  const box = alertBox();
  const submit = h("button", { type: "submit" }, "Create account");
  const form = h(
    "form",
    { class: "stack", novalidate: true },
    box,
    field("register", "username", "Username", { autocomplete: "username", required: true, maxlength: "200" }),
    field("register", "email", "Email", { type: "email", autocomplete: "email", required: true, maxlength: "254" }),
    field("register", "password", "Password (8 to 128 characters)", {
      type: "password",
      autocomplete: "new-password",
      required: true,
      minlength: "8",
      maxlength: "128",
    }),
    submit,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(submit, async () => {
      const username = form.elements.username.value.trim();
      try {
        await call("register", {
          body: { username, email: form.elements.email.value.trim(), password: form.elements.password.value },
        });
        navigate("#/login", `Account ${username} created. Please log in.`);
      } catch (error) {
        showErrors(form, box, error);
      }
    });
  });
  show("Create an account", form, h("p", {}, "Already registered? ", h("a", { href: "#/login" }, "Log in"), "."));
}
