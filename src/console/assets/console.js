// Tessera security console: progressive enhancement only. Every page works without it.
// - Live tail: an EventSource on #tail[data-src]; new records are added at the top of the
//   table. Scrolling down (reading older rows) pauses the view; new rows wait in a buffer and
//   the toggle button shows how many. Rows are built with textContent, never innerHTML.
// - Incident form: the submit button stays disabled until the typed tenant id matches
//   (the server checks it again).
"use strict";

(function () {
  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function pill(parent, text, cls) {
    var s = document.createElement("span");
    s.className = "pill " + cls;
    s.textContent = text;
    parent.appendChild(s);
    parent.appendChild(document.createTextNode(" "));
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function time(ms) {
    var d = new Date(ms);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + "Z";
  }

  function klass(status) { return status < 400 ? "ok" : status < 500 ? "warn" : "bad"; }

  function row(r) {
    var tr = document.createElement("tr");
    tr.className = "fresh";
    cell(tr, time(r.ts));
    var t = cell(tr, "");
    var code = document.createElement("code");
    code.className = "id";
    code.textContent = r.token_id || "—";
    t.appendChild(code);
    cell(tr, r.method);
    cell(tr, r.path, "path");
    pill(cell(tr, "", "num"), String(r.status), klass(r.status));
    cell(tr, r.verify || "");
    cell(tr, r.client_ip || "");
    cell(tr, (r.duration_ms || 0).toFixed(1), "num");
    var flags = cell(tr, "");
    (r.anomalies || []).forEach(function (a) { pill(flags, a, "warn"); });
    return tr;
  }

  function tail(box) {
    var body = document.getElementById("tail-body");
    var state = document.getElementById("tail-state");
    var toggle = document.getElementById("tail-toggle");
    if (!body || !window.EventSource) return;
    var paused = false, manual = false, buffer = [], count = 0;

    function render() {
      box.classList.toggle("paused", paused);
      if (paused) {
        state.textContent = "Paused" + (buffer.length ? ": " + buffer.length + " new record(s) waiting" : "") +
          (manual ? "." : " while you read (scrolled down).");
        toggle.textContent = "Resume";
      } else {
        state.textContent = "Live: " + count + " new record(s) since this page opened.";
        toggle.textContent = "Pause";
      }
    }
    function flush() {
      while (buffer.length) {
        body.insertBefore(row(buffer.shift()), body.firstChild);
      }
      while (body.rows.length > 500) body.deleteRow(body.rows.length - 1);
    }
    function setPaused(p) {
      paused = p;
      if (!paused) { manual = false; flush(); }
      render();
    }
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      manual = !paused;
      setPaused(!paused);
    });
    window.addEventListener("scroll", function () {
      if (manual) return;
      var down = window.scrollY > 120;
      if (down !== paused) setPaused(down);
    }, { passive: true });

    var es = new EventSource(box.getAttribute("data-src"));
    es.addEventListener("record", function (ev) {
      var r;
      try { r = JSON.parse(ev.data); } catch (e) { return; }
      count += 1;
      buffer.push(r);
      if (!paused) flush();
      render();
    });
    es.addEventListener("open", function () { box.setAttribute("data-live", "1"); render(); });
    es.addEventListener("error", function () {
      if (es.readyState === EventSource.CLOSED) state.textContent = "Stream closed (session ended?). Reload the page.";
    });
    render();
  }

  function typedConfirm(input) {
    var form = input.form;
    var button = form && form.querySelector("button[type=submit]");
    if (!button) return;
    function check() { button.disabled = input.value.trim() !== input.getAttribute("data-expect"); }
    input.addEventListener("input", check);
    check();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var box = document.getElementById("tail");
    if (box) tail(box);
    document.querySelectorAll("input[data-expect]").forEach(typedConfirm);
  });
})();
