// Wallboard: draws the floor snapshot and redraws it on every SSE "snapshot" event
// (/wallboard/events). Times shown as "since" are counted here every second. No library.
(function () {
  "use strict";
  var LABELS = {available: "свободен", ringing: "звонит", on_call: "разговор", wrapup: "поствызов",
                paused: "пауза", logged_out: "не в сети"};
  var floor = document.getElementById("wb-floor");
  var conn = document.getElementById("wb-conn");
  var root = document.getElementById("wallboard");
  var skew = 0;  // server clock minus ours, ms

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function elapsed(iso) {
    if (!iso) return "";
    var s = Math.max(0, Math.floor((Date.now() + skew - Date.parse(iso)) / 1000));
    var m = Math.floor(s / 60), h = Math.floor(m / 60);
    var mm = String(m % 60).padStart(2, "0"), ss = String(s % 60).padStart(2, "0");
    return h ? h + ":" + mm + ":" + ss : mm + ":" + ss;
  }
  function fig(value, label, alert, key) {
    var f = el("div", "fig" + (alert ? " alert" : ""));
    var b = el("b", null, value);
    b.setAttribute("data-k", key);
    f.appendChild(b);
    f.appendChild(el("span", null, label));
    return f;
  }
  function operator(o) {
    var box = el("div", "op " + o.state);
    box.setAttribute("data-ext", o.extension);
    box.setAttribute("data-state", o.state);
    box.appendChild(el("div", "name", o.extension + " " + o.name));
    var st = el("div", "state", LABELS[o.state] || o.state);
    var t = el("span", "since");
    if (o.state === "wrapup") t.setAttribute("data-until", o.until || o.since);
    else if (o.state !== "available") t.setAttribute("data-since", o.since || "");
    st.appendChild(document.createTextNode(" "));
    st.appendChild(t);
    box.appendChild(st);
    var detail = [];
    if (o.reason) detail.push(o.reason);
    if (o["with"]) detail.push((o.state === "ringing" ? "← " : "с ") + o["with"]);
    box.appendChild(el("div", "detail", detail.join(" · ")));
    return box;
  }
  function draw(snap) {
    if (snap.at) skew = Date.parse(snap.at) - Date.now();
    var frag = document.createDocumentFragment();
    snap.departments.forEach(function (d) {
      var sec = el("section", "dept");
      sec.setAttribute("data-dept", d.code);
      sec.appendChild(el("h2", null, d.name));
      var figs = el("div", "figures");
      figs.appendChild(fig(d.waiting, "ждут", d.waiting > 0, "waiting"));
      var lw = fig(Math.round(d.longest_wait_s) + " с", "дольше всех ждёт", d.longest_wait_s > 30, "longest");
      figs.appendChild(lw);
      figs.appendChild(fig(d.answered_today, "отвечено сегодня", false, "answered"));
      figs.appendChild(fig(d.missed_today, "пропущено сегодня", d.missed_today > 0, "missed"));
      figs.appendChild(fig(d.violations_today, "нарушений сегодня", d.violations_today > 0, "violations"));
      sec.appendChild(figs);
      var ops = el("div", "ops");
      d.operators.forEach(function (o) { ops.appendChild(operator(o)); });
      sec.appendChild(ops);
      frag.appendChild(sec);
    });
    floor.replaceChildren(frag);
    tick();
  }
  function tick() {
    floor.querySelectorAll("[data-since]").forEach(function (e) { e.textContent = elapsed(e.getAttribute("data-since")); });
    floor.querySelectorAll("[data-until]").forEach(function (e) {
      var left = Math.max(0, Math.ceil((Date.parse(e.getAttribute("data-until")) - Date.now() - skew) / 1000));
      e.textContent = left + " с";
    });
  }
  var initial = document.getElementById("wb-initial");
  if (initial) { try { draw(JSON.parse(initial.textContent)); } catch (e) { /* keep server HTML */ } }
  setInterval(tick, 1000);

  var source = new EventSource(root.getAttribute("data-events"));
  source.addEventListener("snapshot", function (ev) {
    draw(JSON.parse(ev.data));
    conn.textContent = "в эфире " + new Date().toLocaleTimeString();
    conn.className = "conn live";
    root.setAttribute("data-updated", String(Date.now()));
  });
  source.onerror = function () { conn.textContent = "нет связи, переподключение…"; conn.className = "conn"; };
})();
