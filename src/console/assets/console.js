// The console's only script: live regions and confirmations. Pages work
// without it (forms post, links navigate); with it, the part of a page marked
// data-live is fetched again every two seconds and replaced when it changed,
// and forms marked data-confirm ask first.
"use strict";

const REFRESH_MS = 2000;

async function refresh() {
  const live = document.querySelector("[data-live]");
  if (!live) return;
  // Never replace a form someone is filling in.
  const active = document.activeElement;
  if (active && active !== document.body && live.contains(active) && active.closest("form") && active.tagName !== "BUTTON") return;
  try {
    const response = await fetch(location.href, { headers: { "X-Console-Refresh": "1" }, credentials: "same-origin" });
    if (!response.ok || response.redirected) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.querySelector("[data-live]");
    if (fresh && fresh.innerHTML !== live.innerHTML) {
      live.innerHTML = fresh.innerHTML;
    }
  } catch (_) {
    // The API is restarting or the network is down: try again next time.
  }
}

document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}, true);

if (document.querySelector("[data-live]")) {
  setInterval(refresh, REFRESH_MS);
}
