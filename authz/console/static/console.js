// Tessera console: the little JavaScript it has (served from 'self'; the CSP allows nothing inline).
(function () {
  "use strict";

  // Expiry countdowns: every <time data-expires="epoch seconds"> shows the time left.
  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("time[data-expires]").forEach(function (el) {
      var left = Math.round(parseFloat(el.getAttribute("data-expires")) - now);
      if (isNaN(left)) return;
      var text;
      if (left <= 0) {
        text = "expired";
      } else {
        var m = Math.floor(left / 60), s = left % 60;
        text = "in " + m + ":" + (s < 10 ? "0" : "") + s;
      }
      el.textContent = text;
      el.classList.add("countdown");
      el.setAttribute("title", el.getAttribute("datetime"));
    });
  }
  setInterval(tick, 1000);
  document.addEventListener("DOMContentLoaded", tick);
  document.addEventListener("htmx:afterSwap", tick);

  // Hold the queue's live refresh while someone is typing a note or has a button focused in it, so
  // the refresh never swaps a form out from under them.
  document.addEventListener("htmx:beforeRequest", function (evt) {
    var queue = document.getElementById("queue");
    var active = document.activeElement;
    if (queue && evt.detail.elt === queue && active && active !== document.body && queue.contains(active)) {
      evt.preventDefault();
    }
  });
})();
