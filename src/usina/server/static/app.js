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

  // Times come as UTC <time> elements: show them in the viewer's zone, with UTC on hover.
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function zoneName(d) {
    try {
      var parts = new Intl.DateTimeFormat("en-US", { timeZoneName: "short" }).formatToParts(d);
      for (var i = 0; i < parts.length; i++) if (parts[i].type === "timeZoneName") return parts[i].value;
    } catch (e) { /* an old browser: the offset below */ }
    var off = -d.getTimezoneOffset();
    return "UTC" + (off < 0 ? "-" : "+") + pad(Math.floor(Math.abs(off) / 60)) + ":" + pad(Math.abs(off) % 60);
  }
  function localTimes(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      el.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
        pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + " " + zoneName(d);
      el.classList.add("local");
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes(document);
    var table = document.querySelector("table.runs[data-poll]");
    if (table) pollRuns(table);
    var run = document.getElementById("run");
    if (run) pollRun(run);
    document.querySelectorAll("pre.log[data-follow]").forEach(follow);
  });
})();
