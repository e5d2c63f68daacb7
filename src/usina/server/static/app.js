// Live status for the runs list and a run's page; live log lines for running attempts.
(function () {
  "use strict";
  var words = {};
  try { words = JSON.parse(document.body.dataset.states || "{}"); } catch (e) { words = {}; }

  function setState(el, state) {
    if (!el) return;
    el.className = "state s-" + state;
    el.textContent = words[state] || state;
  }

  function pollRuns(table) {
    var url = table.dataset.poll;
    var known = {};
    table.querySelectorAll("tr[data-run]").forEach(function (tr) { known[tr.dataset.run] = tr; });
    function tick() {
      fetch(url, { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.json() : null;
      }).then(function (page) {
        if (!page) return;
        var fresh = false;
        page.items.forEach(function (run) {
          var tr = known[run.id];
          if (!tr) { fresh = true; return; }
          setState(tr.querySelector(".state"), run.state);
          var total = 0; Object.keys(run.step_states).forEach(function (k) { total += run.step_states[k]; });
          tr.querySelector(".progress").textContent = (run.step_states.succeeded || 0) + "/" + total;
        });
        if (fresh) location.reload();
      }).catch(function () {}).then(function () { setTimeout(tick, 2000); });
    }
    setTimeout(tick, 2000);
  }

  function pollRun(el) {
    if (el.dataset.finished === "true") return;
    function tick() {
      fetch("/api/v1/runs/" + encodeURIComponent(el.dataset.run), { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (run) {
          if (!run) return;
          var sig = run.state + "|" + run.steps.map(function (s) { return s.state + s.attempts + ";"; }).join("");
          if (sig !== el.dataset.sig) { location.reload(); }
        }).catch(function () {}).then(function () { setTimeout(tick, 2000); });
    }
    setTimeout(tick, 2000);
  }

  function follow(pre) {
    if (!window.ReadableStream) return;
    fetch(pre.dataset.follow, { credentials: "same-origin" }).then(function (r) {
      if (!r.ok || !r.body) return;
      pre.textContent = "";
      var reader = r.body.getReader(), dec = new TextDecoder();
      function read() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          pre.textContent += dec.decode(chunk.value, { stream: true });
          pre.scrollTop = pre.scrollHeight;
          return read();
        });
      }
      return read();
    }).catch(function () {});
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.querySelector("table.runs[data-poll]");
    if (table) pollRuns(table);
    var run = document.getElementById("run");
    if (run) pollRun(run);
    document.querySelectorAll("pre.log[data-follow]").forEach(follow);
  });
})();
