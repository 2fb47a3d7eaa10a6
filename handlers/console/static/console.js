// authbroker console: the copy button and live events. Everything else works without it.
(function () {
  "use strict";

  // Copy buttons: shown only when this script runs (without it, select the field's text).
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field) return;
    button.hidden = false;
    button.addEventListener("click", function () {
      var done = function () {
        button.textContent = "Copied";
        button.classList.add("copied");
        setTimeout(function () { button.textContent = "Copy"; button.classList.remove("copied"); }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(field.value).then(done, function () { field.select(); });
      } else {
        field.select();
        try { if (document.execCommand("copy")) done(); } catch (e) { /* selected: copy by hand */ }
      }
    });
  });

  // Live events: prepend what the server sends, newest first, at most data-size entries.
  var list = document.getElementById("event-list");
  if (!list || !window.EventSource || !list.getAttribute("data-stream")) return;
  var size = parseInt(list.getAttribute("data-size"), 10) || 15;
  var state = document.querySelector("[data-live-state]");
  var empty = document.getElementById("events-empty");
  var seen = {};
  list.querySelectorAll("li[data-id]").forEach(function (li) { seen[li.getAttribute("data-id")] = true; });

  function span(cls, text) {
    var el = document.createElement("span");
    el.className = cls;
    el.textContent = text;
    return el;
  }

  function add(event) {
    if (!event || !event.id || seen[event.id]) return;
    seen[event.id] = true;
    var li = document.createElement("li");
    var type = String(event.type || "");
    li.className = "event fresh tone-" + type.split(".").pop();
    li.setAttribute("data-id", event.id);
    var time = document.createElement("time");
    var at = String(event.occurred_at || "");
    time.setAttribute("datetime", at);
    time.textContent = at.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
    li.appendChild(time);
    li.appendChild(span("event-type", type));
    li.appendChild(span("event-subject", (event.app || "") + (event.connection_id ? " · " + event.connection_id : "")));
    if (event.problem) li.appendChild(span("event-problem", event.problem));
    list.insertBefore(li, list.firstChild);
    while (list.children.length > size) list.removeChild(list.lastChild);
    if (empty) empty.hidden = true;
    // The connection's status badge on this page follows the event.
    if (event.connection_id && event.status) {
      document.querySelectorAll("[data-status-for]").forEach(function (badge) {
        if (badge.getAttribute("data-status-for") === event.connection_id) {
          badge.textContent = event.status;
          badge.className = "badge status-" + event.status;
        }
      });
    }
  }

  var source = new EventSource(list.getAttribute("data-stream"));
  source.addEventListener("open", function () {
    if (state) { state.hidden = false; state.textContent = "live"; state.classList.remove("off"); }
  });
  source.addEventListener("error", function () {
    if (state) { state.textContent = "reconnecting"; state.classList.add("off"); }
  });
  source.addEventListener("auth", function (message) {
    try { add(JSON.parse(message.data)); } catch (e) { /* not an event: ignore */ }
  });
})();
