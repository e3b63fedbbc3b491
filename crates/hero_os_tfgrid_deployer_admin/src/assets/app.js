// Hero OS deployer admin: progressive enhancement only. Every page works without this file.
(function () {
  "use strict";

  // ---- Username rules: mirrors hero_os_tfgrid_deployer_sdk::username::validate (same order, same messages).
  function usernameError(name, rules) {
    if (name.length === 0) return "username is empty";
    var len = Array.from(name).length;
    if (len > rules.max) return "username is " + len + " characters long; Forge allows at most " + rules.max;
    if (!/^[\x00-\x7f]*$/.test(name)) return "username must be ASCII (it becomes a DNS label)";
    if (/[A-Z]/.test(name)) return "username must be lowercase";
    var body = name.indexOf(rules.prefix) === 0 ? name.slice(rules.prefix.length) : name;
    if (body.length === 0) return "username must not end with '-'";
    var bad = body.match(/[^a-z0-9-]/);
    if (bad) return "username may only contain a-z, 0-9 and '-' (found " + JSON.stringify(bad[0]).replace(/^"|"$/g, "'") + "); it becomes a DNS label";
    if (name[0] === "-" || body[0] === "-") return "username must start with a letter or a digit";
    if (name[name.length - 1] === "-") return "username must not end with '-'";
    if (name.indexOf("--") >= 0) return "username must not contain '--'";
    if (/^[0-9]+$/.test(name)) return "username must not be digits only (a number names a user by id)";
    if (rules.reserved.indexOf(name) >= 0) return "username is reserved by Forge";
    if (name.indexOf("deployer-test-") === 0) return "usernames starting with 'deployer-test-' are not allowed; test users use the prefix '" + rules.prefix + "'";
    return null;
  }
  window.heroUsernameError = usernameError;

  function setupUsername(input) {
    var rules = {
      max: parseInt(input.dataset.max, 10),
      prefix: input.dataset.testPrefix,
      reserved: (input.dataset.reserved || "").split(",")
    };
    var out = document.getElementById(input.getAttribute("aria-describedby").split(" ")[0]);
    function check(show) {
      var err = usernameError(input.value, rules);
      if (show || !err) {
        out.textContent = err || "";
        input.setAttribute("aria-invalid", err ? "true" : "false");
      }
      return err;
    }
    input.addEventListener("input", function () { check(input.value.length > 0); });
    input.form.addEventListener("submit", function (e) {
      if (check(true)) { e.preventDefault(); input.focus(); }
    });
  }

  // ---- Copy buttons.
  function setupCopy(btn) {
    btn.hidden = false;
    btn.addEventListener("click", function () {
      var el = document.getElementById(btn.dataset.copyTarget);
      var text = el ? el.textContent.trim() : "";
      var done = function () { var t = btn.textContent; btn.textContent = "Copied"; setTimeout(function () { btn.textContent = t; }, 1500); };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(el); });
      } else { selectText(el); done(); }
    });
  }
  function selectText(el) {
    if (!el) return;
    var r = document.createRange(); r.selectNodeContents(el);
    var s = window.getSelection(); s.removeAllRanges(); s.addRange(r);
    try { document.execCommand("copy"); } catch (e) { /* selection stays for manual copy */ }
  }

  // ---- Confirmations: without JS the server shows a confirmation page instead.
  function setupConfirm(form) {
    form.addEventListener("submit", function (e) {
      var field = form.querySelector("input[name=confirm]");
      if (!field || field.value === "yes") return;
      if (window.confirm(form.dataset.confirm)) { field.value = "yes"; } else { e.preventDefault(); }
    });
  }

  // ---- Live job progress over server-sent events.
  function fmtDuration(ms) {
    if (ms == null) return "";
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return Math.floor(ms / 60000) + " min " + Math.floor((ms % 60000) / 1000) + " s";
  }
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function fmtTime(ms) {
    var d = new Date(ms);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
  }
  // Delay from each job event (server clock) to its arrival here, kept across the reload at the
  // end of a job for the benchmark.
  // Entries: [job_id, seq, at_ms (server), arrival_ms (here)].
  window.__heroArrivals = [];
  try { window.__heroArrivals = JSON.parse(sessionStorage.getItem("heroArrivals") || "[]"); } catch (e) { /* private mode */ }

  function setupLive(box) {
    if (!window.EventSource) return;
    var jobId = box.dataset.liveJob;
    var after = box.dataset.afterSeq || "0";
    var log = document.getElementById("job-log");
    var status = document.getElementById("live-status");
    var es = new EventSource("/jobs/" + jobId + "/events?after=" + after);
    if (status) status.textContent = "● live";
    es.addEventListener("progress", function (m) {
      var ev = JSON.parse(m.data);
      window.__heroArrivals.push([ev.job_id, ev.seq, ev.at_ms, Date.now()]);
      try { sessionStorage.setItem("heroArrivals", JSON.stringify(window.__heroArrivals.slice(-2000))); } catch (e) { /* ignore */ }
      if (log) {
        var empty = log.querySelector(".log-empty"); if (empty) empty.remove();
        var li = document.createElement("li");
        li.dataset.level = ev.level; li.dataset.seq = ev.seq;
        var t = document.createElement("time"); t.textContent = fmtTime(ev.at_ms);
        li.appendChild(t); li.appendChild(document.createTextNode(ev.message));
        log.appendChild(li); log.scrollTop = log.scrollHeight;
        var count = document.querySelector("[data-log-count]");
        if (count) count.textContent = String(log.querySelectorAll("li[data-seq]").length);
      }
      box.dataset.lastEventAt = String(ev.at_ms);
    });
    es.addEventListener("job", function (m) {
      var job = JSON.parse(m.data);
      var badge = document.querySelector("[data-job-badge] .badge");
      if (badge) {
        var cls = { succeeded: "ok", failed: "bad", cancelled: "neutral" }[job.state] || "info";
        badge.textContent = job.state; badge.dataset.jobState = job.state; badge.className = "badge " + cls;
      }
      var done = 0;
      job.steps.forEach(function (s) {
        var li = document.querySelector(".steps li[data-step='" + s.index + "']");
        if (!li) return;
        li.dataset.state = s.state;
        if (s.state === "done" || s.state === "skipped") done++;
        var st = li.querySelector(".state"); if (st) st.textContent = s.state;
        var tm = li.querySelector(".dur");
        if (tm) {
          if (s.state === "running" && s.started_at_ms != null) { tm.dataset.startedAtMs = String(s.started_at_ms); }
          else { delete tm.dataset.startedAtMs; tm.textContent = fmtDuration(s.duration_ms); }
        }
        var at = li.querySelector(".att"); if (at) at.textContent = s.attempts ? ("attempt " + s.attempts) : "";
        var msg = li.querySelector(".msg"); if (msg && s.message) msg.textContent = s.message;
      });
      var bar = document.querySelector("progress.bar");
      if (bar) { bar.max = job.steps.length || 1; bar.value = done; }
      var pct = document.querySelector("[data-progress-text]");
      if (pct) pct.textContent = done + " of " + job.steps.length + " steps";
    });
    // The running step's elapsed time, ticking. Server time: the offset of this clock from the
    // server's is estimated from the events as they arrive (their at_ms vs now).
    var skew = 0;
    es.addEventListener("progress", function (m) { skew = Date.now() - JSON.parse(m.data).at_ms; });
    var ticker = setInterval(function () {
      document.querySelectorAll(".steps .dur[data-started-at-ms]").forEach(function (el) {
        el.textContent = fmtDuration(Math.max(0, Date.now() - skew - parseInt(el.dataset.startedAtMs, 10)));
      });
    }, 500);
    es.addEventListener("done", function () {
      clearInterval(ticker);
      es.close();
      if (status) status.textContent = "finished";
      setTimeout(function () { window.location.reload(); }, 400);
    });
    es.addEventListener("failure", function (m) {
      es.close();
      if (status) status.textContent = "live updates unavailable: " + m.data;
    });
    es.onerror = function () { if (status) status.textContent = "reconnecting…"; };
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("input[data-username-rules]").forEach(setupUsername);
    document.querySelectorAll("button[data-copy-target]").forEach(setupCopy);
    document.querySelectorAll("form[data-confirm]").forEach(setupConfirm);
    document.querySelectorAll("[data-live-job]").forEach(setupLive);
    // A batch's progress page reloads itself while jobs are active (the server renders it).
    document.querySelectorAll("[data-refresh-ms]").forEach(function (el) {
      setTimeout(function () { window.location.reload(); }, Number(el.dataset.refreshMs) || 2000);
    });
  });
})();
