// The review page: before/after slider, finding regions on and off, and a reload when a run moves on.
// No framework, no build step; the page works without it (the Approve / Reject buttons are a form).
(function () {
  "use strict";

  function slider() {
    var range = document.getElementById("slider");
    var after = document.getElementById("after");
    var divider = document.getElementById("divider");
    if (!range || !after) return;
    function show() {
      var v = Number(range.value);
      after.style.clipPath = "inset(0 0 0 " + v + "%)";
      if (divider) divider.style.left = v + "%";
    }
    range.addEventListener("input", show);
    range.addEventListener("change", show);
    show();
  }

  function toggles() {
    document.querySelectorAll("input[data-toggle]").forEach(function (box) {
      box.addEventListener("change", function () {
        var region = document.querySelector('.region[data-region="' + box.dataset.toggle + '"]');
        if (region) region.classList.toggle("hidden", !box.checked);
      });
    });
  }

  function follow() {
    var body = document.body;
    var status = body.dataset.status;
    if (!body.dataset.stateUrl || !(status === "queued" || status === "running")) return;
    var events = Number(body.dataset.events || 0);
    function poll() {
      fetch(body.dataset.stateUrl, {cache: "no-store"}).then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          if (s && (s.status !== status || s.events !== events)) { window.location.reload(); return; }
          window.setTimeout(poll, 1500);
        }, function () { window.setTimeout(poll, 5000); });
    }
    window.setTimeout(poll, 1500);
  }

  document.addEventListener("DOMContentLoaded", function () { slider(); toggles(); follow(); });
})();
