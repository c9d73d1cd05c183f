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

  // Announce a change of the pending count (for screen readers) without making the whole re-rendered
  // queue a live region.
  var lastCount = null;
  function announce() {
    var count = document.getElementById("pending-count");
    var status = document.getElementById("queue-status");
    if (!count || !status) return;
    var n = count.textContent.trim();
    if (lastCount !== null && n !== lastCount) {
      status.textContent = n + (n === "1" ? " approval" : " approvals") + " pending";
    }
    lastCount = n;
  }
  document.addEventListener("DOMContentLoaded", announce);
  document.addEventListener("htmx:afterSwap", announce);

  // Hold the queue's live refresh while someone is typing a note or has a button focused in it, so
  // the refresh never swaps a form out from under them: no new request, and an answer already in
  // flight when they started is dropped (the next refresh after they leave the queue brings it).
  function busyInQueue(elt) {
    var queue = document.getElementById("queue");
    var active = document.activeElement;
    return queue && elt === queue && active && active !== document.body && queue.contains(active);
  }
  document.addEventListener("htmx:beforeRequest", function (evt) {
    if (busyInQueue(evt.detail.elt)) evt.preventDefault();
  });
  document.addEventListener("htmx:beforeSwap", function (evt) {
    if (busyInQueue(evt.detail.elt)) evt.detail.shouldSwap = false;
  });
})();
