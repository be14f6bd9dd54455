// The login page: sends the token once to POST /hearth/v1/session, which sets the
// HttpOnly session cookie; the token is not kept anywhere by this page.
"use strict";

const LOGIN = "/hearth/v1/session";

async function login(event) {
  event.preventDefault();
  const input = document.getElementById("token");
  const out = document.getElementById("login-error");
  out.hidden = true;
  let res;
  try {
    res = await fetch(LOGIN, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Hearth-CSRF": "1" },
      body: JSON.stringify({ token: input.value.trim() }),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (e) {
    out.textContent = `The daemon did not answer: ${e.message}`;
    out.hidden = false;
    return;
  }
  if (res.status === 201) {
    await res.json();
    input.value = "";
    location.reload();
    return;
  }
  let detail = res.statusText;
  try {
    const body = await res.json();
    detail = body.detail || body.title || detail;
  } catch (_) {
    // The status line says enough.
  }
  out.textContent = res.status === 401 ? `That token was not accepted (${detail}).` : `Login failed: HTTP ${res.status} ${detail}`;
  out.hidden = false;
  input.focus();
}

document.getElementById("login-form").addEventListener("submit", login);
