// Neutrino dashboard: small behaviours htmx does not cover. No framework, no build step.
(function () {
  "use strict";

  // The "live" badge follows the page's websocket (htmx ws extension events bubble to the body).
  function setLive(state, label) {
    var badge = document.getElementById("live-state");
    if (!badge) return;
    badge.dataset.state = state;
    var text = badge.querySelector(".live-label");
    if (text) text.textContent = label;
  }
  document.addEventListener("htmx:wsOpen", function () { setLive("open", "live"); });
  document.addEventListener("htmx:wsClose", function () { setLive("closed", "reconnecting"); });
  document.addEventListener("htmx:wsError", function () { setLive("closed", "reconnecting"); });

  // Filter forms: leave empty fields out of the URL, so a shared link says only what it filters.
  document.addEventListener("htmx:configRequest", function (event) {
    if (event.detail.verb !== "get") return;
    var params = event.detail.parameters;
    if (params instanceof FormData) {
      Array.from(params.keys()).forEach(function (key) {
        if (params.get(key) === "") params.delete(key);
      });
    } else if (params) {
      Object.keys(params).forEach(function (key) { if (params[key] === "") delete params[key]; });
    }
  });

  // Plain forms without htmx (and without JS) get the same treatment on submit.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });
})();
