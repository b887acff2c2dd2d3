// popbridge admin: moves the sync progress bars and notices when an
// authorization completes. The page works without it (plain forms,
// a Refresh link, a meta refresh while a device code waits).
"use strict";
document.documentElement.dataset.js = "on";

function poll(url, every, onData) {
  var tick = function () {
    fetch(url, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (d) { if (d !== null && onData(d)) { setTimeout(tick, every); } })
      .catch(function () { setTimeout(tick, every * 3); });
  };
  setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", function () {
  if (document.querySelector(".sync-bar")) {
    poll("/progress", 2000, function (list) {
      var again = false;
      list.forEach(function (p) {
        var card = document.querySelector('section.account[data-user="' + CSS.escape(p.user) + '"]');
        if (!card) { return; }
        var bar = card.querySelector(".sync-bar");
        var count = card.querySelector(".sync-count");
        if (bar && !p.running) { location.reload(); return; }
        if (bar) {
          bar.max = p.total; bar.value = p.done;
          if (count) { count.textContent = p.done + " of " + p.total; }
          again = true;
        }
      });
      return again;
    });
  }
  var flow = document.getElementById("flow");
  if (flow && flow.dataset.status === "pending") {
    poll("/flow/status?id=" + encodeURIComponent(flow.dataset.flow), 1500, function (d) {
      if (d.status !== "pending") { location.reload(); return false; }
      return true;
    });
  }
});
