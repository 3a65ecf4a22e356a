/* Sequence dashboard: the live parts of the server-rendered pages.
 *
 * One WebSocket to /v1/stream per page, authenticated by the session cookie
 * (the API key never reaches this script). Every value from the server is put
 * on the page with textContent, never as HTML.
 */
(function () {
  "use strict";

  var body = document.body;
  var prefix = body.getAttribute("data-prefix") || "/dashboard";
  var page = body.getAttribute("data-page");
  var csrfMeta = document.querySelector('meta[name="csrf-token"]');
  var csrf = csrfMeta ? csrfMeta.getAttribute("content") : "";
  var seqDash = (window.seqDash = { page: page });

  // htmx requests carry the CSRF token as a header too (forms also have the field).
  document.addEventListener("htmx:configRequest", function (e) {
    e.detail.headers["X-CSRF-Token"] = csrf;
  });
  document.addEventListener("htmx:responseError", function (e) {
    var target = e.detail.target;
    var text = "request failed";
    try { text = JSON.parse(e.detail.xhr.responseText).error.message; } catch (_) { /* not JSON */ }
    if (target) { target.textContent = ""; var p = el("p", "flash error", text); p.setAttribute("role", "alert"); target.appendChild(p); }
  });

  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined && text !== null) n.textContent = String(text);
    return n;
  }

  function fmtDuration(s) {
    if (!(s >= 0)) return "—";
    s = Math.floor(s);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + r + "s";
    return r + "s";
  }

  function fmtUsage(u) {
    if (!u) return "—";
    return (u.rss_bytes / 1048576).toFixed(1) + " MB · " + Math.round(u.cpu_percent || 0) + "%";
  }

  // -- the stream ------------------------------------------------------------------------------
  function Stream(channels, onMessage) {
    this.channels = channels;
    this.onMessage = onMessage;
    this.delay = 500;
    this.received = 0;
    this.connect();
  }
  Stream.prototype.connect = function () {
    var self = this;
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/stream";
    var ws = (this.ws = new WebSocket(url));
    var live = document.getElementById("live");
    ws.onopen = function () {
      self.delay = 500;
      ws.send(JSON.stringify({ op: "subscribe", channels: self.channels }));
      if (live) { live.hidden = false; live.textContent = "live"; live.setAttribute("data-state", "on"); }
      self.pinger = setInterval(function () { if (ws.readyState === 1) ws.send('{"op":"ping"}'); }, 20000);
    };
    ws.onmessage = function (ev) {
      var msg;
      try { msg = JSON.parse(ev.data); } catch (_) { return; }
      if (msg.channel) { self.received++; self.onMessage(msg.channel, msg.data); }
      else if (msg.type === "error") { console.warn("stream:", msg.message); }
      else if (msg.type === "subscribed") { seqDash.subscribed = msg.channels; }
    };
    ws.onclose = function () {
      clearInterval(self.pinger);
      if (live) { live.textContent = "offline"; live.setAttribute("data-state", "off"); }
      setTimeout(function () { self.connect(); }, self.delay);
      self.delay = Math.min(self.delay * 2, 10000);
    };
  };

  // -- strategies: the table, and one strategy's header ----------------------------------------
  function statusSpan(span, status) {
    span.className = "status status-" + status;
    span.textContent = status;
  }

  // Strategy-decided text (log lines, exit reasons) as sequence/shown.py shows it: controls
  // and the bidi overrides, embeddings, isolates and marks written as visible escapes, so
  // "\u202e" cannot make a line read backwards. Lone surrogates are left (shown as U+FFFD).
  var CONTROLS = /[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
  function shown(text) {
    text = String(text);
    return text.replace(CONTROLS, function (ch) {
      if (ch === "\n") return "\\n";
      if (ch === "\r") return "\\r";
      var cp = ch.charCodeAt(0);
      return cp < 0x100 ? "\\x" + ("0" + cp.toString(16)).slice(-2) : "\\u" + ("000" + cp.toString(16)).slice(-4);
    });
  }

  function setText(node, text) {
    text = String(text);
    if (node.textContent !== text) node.textContent = text;  // untouched cells cost no layout
  }

  function setUptimeCell(td, s) {
    var started = s.current_run && s.status === "running" ? s.current_run.started_at || "" : "";
    if (td.getAttribute("data-started") !== started) td.setAttribute("data-started", started);
    tickUptime(td);
  }

  function tickUptime(td) {
    var started = td.getAttribute("data-started");
    setText(td, started ? fmtDuration((Date.now() - Date.parse(started)) / 1000) : "—");
  }

  // rows: strategy id -> its <tr>, kept beside the table (no selector query per update).
  function upsertRow(tbody, rows, s) {
    var tr = rows[s.strategy_id];
    if (!tr) {
      tr = el("tr");
      tr.setAttribute("data-sid", s.strategy_id);
      var th = el("th"); th.setAttribute("scope", "row");
      var a = el("a", null, s.name); a.href = prefix + "/strategies/" + encodeURIComponent(s.strategy_id);
      th.appendChild(a); tr.appendChild(th);
      ["status", "uptime", "restarts", "last_exit", "usage", "mode"].forEach(function (c) {
        var td = el("td"); td.setAttribute("data-col", c);
        if (c === "restarts" || c === "usage") td.className = "num";
        if (c === "status") td.appendChild(el("span"));
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
      rows[s.strategy_id] = tr;
    }
    var cells = tr.cells;  // th, status, uptime, restarts, last_exit, usage, mode
    var span = cells[1].firstChild;
    if (span.className !== "status status-" + s.status) statusSpan(span, s.status);
    setUptimeCell(cells[2], s);
    setText(cells[3], s.restart_count);
    setText(cells[4], s.last_exit ? shown(s.last_exit.reason || "—") : "—");
    setText(cells[5], fmtUsage(s.usage));
    setText(cells[6], s.is_sandbox ? "paper" : "live");
  }

  function strategiesPage() {
    var tbody = document.querySelector("#strategies tbody");
    var empty = document.getElementById("empty");
    var rows = {};
    Array.prototype.forEach.call(tbody.rows, function (tr) { rows[tr.getAttribute("data-sid")] = tr; });
    seqDash.updates = 0;
    function apply(items, snapshot) {
      var seen = {};
      items.forEach(function (s) {
        if (s.deleted) {
          if (rows[s.strategy_id]) { rows[s.strategy_id].remove(); delete rows[s.strategy_id]; }
        } else { upsertRow(tbody, rows, s); seen[s.strategy_id] = true; }
      });
      if (snapshot) {  // rows the snapshot no longer has were deleted meanwhile
        Object.keys(rows).forEach(function (sid) {
          if (!seen[sid]) { rows[sid].remove(); delete rows[sid]; }
        });
      }
      empty.hidden = tbody.children.length > 0;
      seqDash.updates++;
      if (!seqDash.liveAt) seqDash.liveAt = performance.now();
    }
    new Stream(["strategies"], function (ch, data) { apply(data.strategies || [], !!data.snapshot); });
    Array.prototype.forEach.call(tbody.querySelectorAll('[data-col="uptime"]'), tickUptime);
    setInterval(function () {
      Array.prototype.forEach.call(tbody.querySelectorAll('[data-col="uptime"]'), tickUptime);
    }, 1000);
  }

  // -- the log view ------------------------------------------------------------------------------
  var ROW = 18;
  var MAX_LINES = 200000;

  function LogView(root, sid) {
    this.root = root;
    this.sid = sid;
    this.spacer = root.querySelector(".log-spacer");
    this.rowsBox = root.querySelector(".log-rows");
    this.lines = [];        // {r: run, s: seq, k: stream, t: text, ts}
    this.view = null;       // indexes of matching lines; null = every line
    this.filterText = "";
    this.filterStream = "";
    this.paused = false;
    this.follow = true;
    this.status = null;
    this.onStart = null;
    this.run = null;
    this.lastSeq = 0;
    this.pendingRender = false;
    this.stats = { received: 0, shown: 0, lags: [], lastSeq: 0, frames: 0 };
    this.pool = [];
    var self = this;
    root.addEventListener("scroll", function () {
      if (self.autoScrolling) { self.autoScrolling = false; } else {
        self.follow = root.scrollTop + root.clientHeight >= root.scrollHeight - ROW * 2;
      }
      self.render();
    }, { passive: true });
    window.addEventListener("resize", function () { self.render(); });
  }

  LogView.prototype.matches = function (x) {
    if (this.filterStream && x.k !== this.filterStream) return false;
    if (this.filterText && x.t.toLowerCase().indexOf(this.filterText) < 0) return false;
    return true;
  };

  // A new filter is applied in slices of a few milliseconds, so typing stays responsive with
  // 200,000 lines in the page; the previous view stays on screen until the new one is ready.
  LogView.prototype.setFilter = function (text, stream) {
    this.rawFilter = text || "";
    this.filterText = this.rawFilter.toLowerCase();
    this.filterStream = stream || "";
    var gen = (this.filterGen = (this.filterGen || 0) + 1);
    this.follow = true;
    if (!this.filterText && !this.filterStream) { this.scanning = false; this.view = null; this.scheduleRender(); return; }
    var self = this, v = [], i = 0;
    this.scanning = true;
    function step() {
      if (gen !== self.filterGen) return;
      var L = self.lines, until = performance.now() + 8;
      while (i < L.length && performance.now() < until) {
        for (var k = 0; k < 2000 && i < L.length; k++, i++) if (self.matches(L[i])) v.push(i);
      }
      if (i < L.length) { setTimeout(step, 0); return; }
      self.scanning = false;
      self.view = v;
      self.scheduleRender();
    }
    step();
  };

  LogView.prototype.count = function () { return this.view ? this.view.length : this.lines.length; };
  LogView.prototype.at = function (i) { return this.lines[this.view ? this.view[i] : i]; };

  LogView.prototype.append = function (x) {
    this.lines.push(x);
    if (this.view && this.matches(x)) this.view.push(this.lines.length - 1);
    if (this.lines.length > MAX_LINES) {
      var drop = MAX_LINES / 4;
      this.lines.splice(0, drop);
      this.stats.shownIdx = Math.max(0, (this.stats.shownIdx || 0) - drop);
      if (this.scanning) this.setFilter(this.rawFilter, this.filterStream);  // its indexes moved
      if (this.view) {
        var v = [];
        for (var i = 0; i < this.view.length; i++) if (this.view[i] >= drop) v.push(this.view[i] - drop);
        this.view = v;
      }
    }
  };

  LogView.prototype.system = function (text) {
    this.append({ r: this.run, s: 0, k: "system", t: text, ts: Date.now() / 1000, local: true });
    this.scheduleRender();
  };

  // The feed: the NDJSON of `logs --follow` (lines as they are stored, in order, across
  // restarts), read as it arrives. It ends when the strategy stops for good; the view then
  // waits for the strategy to be queued or running again and follows on from where it was.
  LogView.prototype.take = function (x) {
    if (x.run_id !== this.run) {
      if (this.run !== null) this.system("— a new run started: " + String(x.run_id).slice(0, 8) + " —");
      this.run = x.run_id;
      this.lastSeq = 0;
    }
    if (x.seq <= this.lastSeq) return;
    this.append({ r: x.run_id, s: x.seq, k: x.stream, t: shown(x.line), ts: x.ts, live: x.ts >= this.openedAt });
    this.lastSeq = x.seq;
    this.stats.received++;
  };

  LogView.prototype.feed = async function () {
    this.openedAt = Date.now() / 1000;
    var url = prefix + "/strategies/" + encodeURIComponent(this.sid) + "/logs.ndjson?";
    for (;;) {
      var qs = this.run ? "run_id=" + encodeURIComponent(this.run) + "&after_seq=" + this.lastSeq : "tail=2000";
      try {
        var r = await fetch(url + qs, { credentials: "same-origin", headers: { Accept: "application/x-ndjson" } });
        if (r.status === 401) { this.system("signed out: sign in again to follow the logs"); return; }
        if (r.status === 404) { this.system("this strategy no longer exists"); return; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        this.following = true;
        var reader = r.body.getReader(), dec = new TextDecoder(), buf = "";
        for (;;) {
          var res = await reader.read();
          if (res.done) break;
          buf += dec.decode(res.value, { stream: true });
          var nl = buf.lastIndexOf("\n");
          if (nl < 0) continue;
          var parts = buf.slice(0, nl).split("\n");
          buf = buf.slice(nl + 1);
          for (var i = 0; i < parts.length; i++) if (parts[i]) this.take(JSON.parse(parts[i]));
          this.scheduleRender();
        }
      } catch (e) {
        this.following = false;
        this.system("the log feed was interrupted (" + e.message + "); reconnecting");
        await sleep(2000);
        continue;
      }
      this.following = false;
      await sleep(1000);
      await this.started();
    }
  };

  // Resolves once the strategy is queued or running (the strategies channel says so).
  LogView.prototype.started = function () {
    var self = this;
    if (this.status === "queued" || this.status === "running") return Promise.resolve();
    return new Promise(function (resolve) { self.onStart = resolve; });
  };

  LogView.prototype.setStatus = function (status) {
    this.status = status;
    if ((status === "queued" || status === "running") && this.onStart) {
      var go = this.onStart; this.onStart = null; go();
    }
  };

  function sleep(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  LogView.prototype.scheduleRender = function () {
    if (this.pendingRender) return;
    this.pendingRender = true;
    var self = this;
    requestAnimationFrame(function () { self.pendingRender = false; self.render(); });
  };

  LogView.prototype.render = function () {
    var now = Date.now() / 1000;
    this.stats.frames++;
    var n = this.count();
    if (!this.paused) this.shownCount = n;
    var total = this.paused ? (this.shownCount || 0) : n;
    var root = this.root;
    var h = total * ROW;
    if (this.spacer.style.height !== h + "px") this.spacer.style.height = h + "px";
    if (!this.paused && this.follow) {
      var bottom = Math.max(0, h - root.clientHeight);
      if (Math.abs(root.scrollTop - bottom) > 1) { this.autoScrolling = true; root.scrollTop = bottom; }
    }
    var first = Math.max(0, Math.floor(root.scrollTop / ROW));
    var visible = Math.ceil(root.clientHeight / ROW) + 1;
    while (this.pool.length < visible) {
      var d = el("div", "log-row");
      d.appendChild(el("span", "seq")); d.appendChild(document.createTextNode(""));
      this.rowsBox.appendChild(d); this.pool.push(d);
    }
    this.rowsBox.style.transform = "translateY(" + first * ROW + "px)";
    for (var i = 0; i < this.pool.length; i++) {
      var row = this.pool[i], idx = first + i;
      if (i >= visible || idx >= total) { row.hidden = true; continue; }
      var x = this.at(idx);
      row.hidden = false;
      row.className = "log-row " + x.k;
      row.firstChild.textContent = x.s ? String(x.s) : "";
      row.lastChild.nodeValue = x.t;
    }
    // Lag of the lines shown for the first time: now minus when the runner captured them.
    if (!this.paused) {
      var L = this.lines, st = this.stats;
      for (var j = st.shownIdx || 0; j < L.length; j++) {
        if (L[j].live && st.lags.length < 600000) st.lags.push(now - L[j].ts);
        if (L[j].s) st.lastSeq = L[j].s;
      }
      st.shownIdx = L.length;
      st.shown = L.length;
    }
    var label = document.getElementById("log-count");
    if (label) {
      var extra = this.paused && n > total ? " (paused: " + (n - total) + " new)" : "";
      label.textContent = n.toLocaleString() + (this.view ? " matching" : "") + " lines" + extra;
    }
  };

  LogView.prototype.setPaused = function (p) {
    this.paused = p;
    if (!p) this.follow = true;
    this.render();
  };

  function strategyPage() {
    var root = document.getElementById("log-view");
    var sid = root.getAttribute("data-sid");
    var view = (seqDash.logView = new LogView(root, sid));
    var filter = document.getElementById("log-filter");
    var stream = document.getElementById("log-stream");
    var pause = document.getElementById("log-pause");
    var timer = null;
    filter.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { view.setFilter(filter.value, stream.value); }, 120);
    });
    stream.addEventListener("change", function () { view.setFilter(filter.value, stream.value); });
    pause.addEventListener("click", function () {
      var p = pause.getAttribute("aria-pressed") !== "true";
      pause.setAttribute("aria-pressed", p ? "true" : "false");
      pause.textContent = p ? "Resume" : "Pause";
      view.setPaused(p);
    });
    root.addEventListener("keydown", function (e) {
      var k = { PageDown: root.clientHeight, PageUp: -root.clientHeight, ArrowDown: ROW, ArrowUp: -ROW }[e.key];
      if (e.key === "End") { view.follow = true; view.render(); e.preventDefault(); return; }
      if (e.key === "Home") { root.scrollTop = 0; e.preventDefault(); return; }
      if (k) { root.scrollTop += k; e.preventDefault(); }
    });

    var status = document.getElementById("status");
    var lastRunKey = null;
    view.setStatus(status.textContent.trim());
    function onStrategy(s) {
      if (s.strategy_id !== sid) return;
      if (s.deleted) { statusSpan(status, "deleted"); return; }
      statusSpan(status, s.status);
      view.setStatus(s.status);
      document.getElementById("restarts").textContent = s.restart_count;
      document.getElementById("last-exit").textContent = s.last_exit ? shown(s.last_exit.reason || "—") : "—";
      var cur = s.current_run;
      var runKey = cur ? cur.run_id + ":" + cur.status : "";
      if (runKey !== lastRunKey) {  // a run started or ended: htmx reloads the runs table
        lastRunKey = runKey;
        document.body.dispatchEvent(new CustomEvent("runs-changed"));
      }
      document.getElementById("current-run").textContent =
        cur ? cur.run_id.slice(0, 8) + " " + cur.status + " on " + (cur.region || "any region") : "—";
      document.getElementById("usage").textContent = fmtUsage(s.usage);
    }
    new Stream(["strategies"], function (ch, data) { (data.strategies || []).forEach(onStrategy); });
    view.feed();
  }

  // -- trading -------------------------------------------------------------------------------------
  function chart(elId, title, series, data) {
    var root = document.getElementById(elId);
    if (!root || !window.uPlot) return null;
    var width = Math.max(280, root.clientWidth || 600);
    var opts = { width: width, height: 240, title: title, series: series, scales: { x: { time: true } },
                 axes: [{}, { size: 70 }] };
    var u = new uPlot(opts, data, root);
    window.addEventListener("resize", function () { u.setSize({ width: Math.max(280, root.clientWidth), height: 240 }); });
    return u;
  }

  function tradingPage() {
    var pnlEl = document.getElementById("pnl-data");
    var pnl = pnlEl ? JSON.parse(pnlEl.textContent) : { realized: [] };
    var u = null;
    function pnlData(p) {
      var xs = p.realized.map(function (x) { return x[0]; }), ys = p.realized.map(function (x) { return x[1]; });
      var now = Date.now() / 1000;
      xs.push(now); ys.push(ys.length ? ys[ys.length - 1] + p.unrealized_now : p.unrealized_now);
      var real = ys.slice(0, -1); real.push(ys.length > 1 ? ys[ys.length - 2] : 0);
      return [xs, real, ys];
    }
    function drawPnl(p) {
      document.getElementById("pnl-now").textContent =
        "Total now " + (p.total_now || 0).toFixed(4) + " (unrealized " + (p.unrealized_now || 0).toFixed(4) + ")";
      var data = pnlData(p);
      if (!u) {
        u = chart("pnl-chart", "", [{}, { label: "realized", stroke: "#0b5cad", width: 2 },
                                    { label: "incl. unrealized", stroke: "#b3261e", dash: [4, 4] }], data);
      } else u.setData(data);
    }
    window.addEventListener("load", function () { drawPnl(pnl); });

    var fillsBody = document.querySelector("#fills tbody");
    var refresh = null;
    function onFill(f) {
      var tr = el("tr");
      [f.ts, f.symbol, f.side, f.qty, f.price, f.fee, f.sandbox ? "paper" : "live", (f.graph_id || "").slice(0, 14)]
        .forEach(function (v, i) {
          var td = el("td", (i >= 3 && i <= 5) ? "num" : (i === 2 ? "side-" + f.side : null), v);
          tr.appendChild(td);
        });
      fillsBody.insertBefore(tr, fillsBody.firstChild);
      while (fillsBody.children.length > 200) fillsBody.lastChild.remove();
      document.getElementById("no-fills").hidden = true;
      document.body.dispatchEvent(new CustomEvent("fill"));  // htmx reloads the positions
      clearTimeout(refresh);
      refresh = setTimeout(function () {
        fetch(prefix + "/trading/pnl.json", { credentials: "same-origin" }).then(function (r) { return r.json(); })
          .then(drawPnl).catch(function () {});
      }, 300);
      seqDash.fills = (seqDash.fills || 0) + 1;
    }
    function onGraph(g) {
      var box = document.querySelector('details.graph[data-gid="' + CSS.escape(g.graph_id) + '"]');
      if (!box) {
        var graphs = document.getElementById("graphs");
        var none = document.getElementById("no-graphs");
        if (none) none.remove();
        box = el("details", "graph"); box.setAttribute("data-gid", g.graph_id); box.open = true;
        var sum = el("summary"); sum.appendChild(el("code", null, g.graph_id)); sum.appendChild(document.createTextNode(" "));
        var st = el("span"); st.setAttribute("data-role", "gstatus"); sum.appendChild(st);
        box.appendChild(sum);
        var t = el("table", "grid compact"); t.appendChild(el("tbody")); box.appendChild(t);
        graphs.insertBefore(box, graphs.firstChild);
      }
      var gs = box.querySelector('[data-role="gstatus"]');
      gs.className = "status status-g-" + g.status; gs.textContent = g.status;
      (g.nodes || []).forEach(function (n) {
        var tr = box.querySelector('tr[data-node="' + CSS.escape(n.node_id) + '"]');
        if (!tr) {
          tr = el("tr"); tr.setAttribute("data-node", n.node_id);
          tr.appendChild(el("td", null, n.node_id));
          var f = el("td", "num"); f.setAttribute("data-role", "filled"); tr.appendChild(f);
          var s = el("td"); var sp = el("span"); sp.setAttribute("data-role", "nstatus"); s.appendChild(sp); tr.appendChild(s);
          box.querySelector("tbody").appendChild(tr);
        }
        tr.querySelector('[data-role="filled"]').textContent = n.filled_qty;
        var ns = tr.querySelector('[data-role="nstatus"]');
        ns.className = "status status-n-" + n.status; ns.textContent = n.status;
      });
    }
    new Stream(["fills", "graphs"], function (ch, data) {
      if (ch === "fills") onFill(data); else if (ch === "graphs") onGraph(data);
    });
  }

  // -- a market's book --------------------------------------------------------------------------------
  function bookPage() {
    var root = document.getElementById("book-root");
    var symbol = root.getAttribute("data-symbol");
    var book = JSON.parse(document.getElementById("book-data").textContent);
    var depth = null, prices = null;
    var px = [[], []];
    function depthData(b) {
      var bids = (b.bids || []).filter(function (l) { return l.price !== null; });
      var asks = (b.asks || []).filter(function (l) { return l.price !== null; });
      var xs = [], yb = [], ya = [];
      var cum = 0, bpts = [];
      bids.forEach(function (l) { cum += l.size; bpts.push([l.price, cum]); });
      bpts.reverse();
      cum = 0;
      var apts = asks.map(function (l) { cum += l.size; return [l.price, cum]; });
      bpts.forEach(function (p) { xs.push(p[0]); yb.push(p[1]); ya.push(null); });
      apts.forEach(function (p) { xs.push(p[0]); yb.push(null); ya.push(p[1]); });
      return [xs, yb, ya];
    }
    function levels(b) {
      var tb = document.querySelector("#levels tbody");
      tb.textContent = "";
      var n = Math.max((b.bids || []).length, (b.asks || []).length);
      for (var i = 0; i < Math.min(n, 10); i++) {
        var bl = (b.bids || [])[i] || {}, al = (b.asks || [])[i] || {};
        var tr = el("tr");
        [bl.size, bl.price, al.price, al.size].forEach(function (v) { tr.appendChild(el("td", "num", v === undefined || v === null ? "" : v)); });
        tb.appendChild(tr);
      }
    }
    function nbbo(d) {
      ["bid", "ask", "mid"].forEach(function (k) {
        var v = d[k];
        document.getElementById("nbbo-" + k).textContent = v === null || v === undefined ? "—" : v;
      });
    }
    function onBook(b) {
      levels(b);
      if (b.nbbo) nbbo(b.nbbo);
      var data = depthData(b);
      if (!depth && window.uPlot && data[0].length) {
        depth = chart("depth-chart", "", [{}, { label: "bids", stroke: "#0d5a26", fill: "rgba(13,90,38,0.15)" },
                                          { label: "asks", stroke: "#b3261e", fill: "rgba(179,38,30,0.15)" }], data);
        if (depth) depth.setScale && null;
      } else if (depth && data[0].length) depth.setData(data);
      seqDash.books = (seqDash.books || 0) + 1;
    }
    function onPrice(p) {
      if (p.mid === null || p.mid === undefined) return;
      px[0].push(p.ts || Date.now() / 1000); px[1].push(p.mid);
      if (px[0].length > 600) { px[0].shift(); px[1].shift(); }
      nbbo(p);
      if (!prices && window.uPlot) prices = chart("price-chart", "", [{}, { label: "mid", stroke: "#0b5cad", width: 2 }], px);
      else if (prices) prices.setData(px);
      seqDash.prices = (seqDash.prices || 0) + 1;
    }
    window.addEventListener("load", function () {
      // The depth chart's x is price, not time.
      onBook(book);
      if (depth) { depth.destroy(); depth = null; }
      var root2 = document.getElementById("depth-chart");
      var data = depthData(book);
      depth = new uPlot({ width: Math.max(280, root2.clientWidth || 600), height: 240, scales: { x: { time: false } },
        series: [{ label: "price" }, { label: "bids", stroke: "#0d5a26", fill: "rgba(13,90,38,0.15)" },
                 { label: "asks", stroke: "#b3261e", fill: "rgba(179,38,30,0.15)" }],
        axes: [{}, { size: 70 }] }, data, root2);
      new Stream(["book:" + symbol, "prices:" + symbol], function (ch, data) {
        if (ch.indexOf("book:") === 0) onBook(data); else onPrice(data);
      });
    });
  }

  if (page === "strategies") strategiesPage();
  else if (page === "strategy") strategyPage();
  else if (page === "trading") tradingPage();
  else if (page === "book") bookPage();
})();
