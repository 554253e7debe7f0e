/* Modelbay console: live pages. A WebSocket (/ws/console/, console/consumers.py) says which
   of the organization's services changed, and which apps' usage did (their calls stored);
   the blocks that show them ([data-live] with [data-service] or [data-app]) reload
   themselves from their [data-poll-url], and tell the page so (a "live:reloaded" event on
   the new block: its charts draw again). A logs panel ([data-logs][data-instance]) gets the
   lines its instance prints as they are written. When the socket drops, the page says so
   and refreshes those blocks every 2 s until it is back. Pages work without any of it. */
(function () {
  "use strict";

  var FALLBACK_POLL_MS = 2000;
  var RECONNECT_MS = 3000;
  var RELOAD_AFTER_MS = 150; // changes in a burst (a pass over several instances) reload once

  var socket = null;
  var fallback = null; // the polling timer while the socket is down
  var pending = {}; // block id -> reload timer

  function liveBlocks() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live][data-poll-url]"));
  }

  function setState(text, ok) {
    document.querySelectorAll("[data-live-state]").forEach(function (element) {
      element.textContent = text;
      element.classList.toggle("is-ok", ok);
      element.classList.toggle("is-error", !ok);
      element.hidden = false;
    });
  }

  /* Fetch the block again and put it in place; not under a form being filled in (the
     next change, or the fallback's next tick, reloads it). */
  function reload(id) {
    var block = document.getElementById(id);
    if (!block || block.querySelector("form[data-edited]")) return;
    fetch(block.dataset.pollUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        var current = document.getElementById(id);
        if (html === null || !current) return;
        var template = document.createElement("template");
        template.innerHTML = html.trim();
        var fresh = template.content.firstElementChild;
        current.replaceWith(fresh);
        if (fresh.querySelector("[data-logs][data-instance]")) follow(); // the panel may show another instance now
        fresh.dispatchEvent(new CustomEvent("live:reloaded", { bubbles: true }));
      })
      .catch(function () { /* the next change or tick tries again */ });
  }

  function reloadSoon(id) {
    window.clearTimeout(pending[id]);
    pending[id] = window.setTimeout(function () { reload(id); }, RELOAD_AFTER_MS);
  }

  /* A service changed ({service}), or an app's usage ({app}): the blocks that show it. */
  function changed(message) {
    liveBlocks().forEach(function (block) {
      var shows = message.service
        ? block.dataset.live === "services" || block.dataset.service === message.service
        : Boolean(message.app) && block.dataset.app === message.app;
      if (shows && block.id) reloadSoon(block.id);
    });
  }

  function appendLog(message) {
    var logs = document.querySelector("[data-logs][data-instance]");
    if (!logs || logs.dataset.instance !== message.instance) return;
    var atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    var text = message.lines.join("\n");
    if (message.reset || logs.dataset.following !== "on") {
      logs.textContent = text || "(no output yet)";
      logs.dataset.following = "on";
    } else if (text) {
      logs.textContent += (logs.textContent ? "\n" : "") + text;
    }
    if (atBottom) logs.scrollTop = logs.scrollHeight;
  }

  /* Ask the socket for the output of the instance the logs panel shows. */
  function follow() {
    var logs = document.querySelector("[data-logs][data-instance]");
    if (socket && socket.readyState === WebSocket.OPEN && logs && logs.dataset.instance) {
      socket.send(JSON.stringify({ follow: logs.dataset.instance }));
    }
  }

  function startFallback() {
    if (fallback) return;
    setState("Live updates lost: refreshing every 2 s", false);
    fallback = window.setInterval(function () {
      liveBlocks().forEach(function (block) { if (block.id) reload(block.id); });
    }, FALLBACK_POLL_MS);
  }

  function stopFallback() {
    if (!fallback) return;
    window.clearInterval(fallback);
    fallback = null;
    liveBlocks().forEach(function (block) { if (block.id) reload(block.id); }); // what was missed
  }

  function connect() {
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + window.location.host + "/ws/console/");
    socket.addEventListener("message", function (event) {
      var message = JSON.parse(event.data);
      if (message.type === "live") {
        stopFallback();
        setState("Live", true);
        follow();
      } else if (message.type === "changed") {
        changed(message);
      } else if (message.type === "log") {
        appendLog(message);
      }
    });
    socket.addEventListener("close", function () {
      socket = null;
      startFallback();
      window.setTimeout(connect, RECONNECT_MS);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var logs = document.querySelector("[data-logs][data-instance]");
    if (!liveBlocks().length && !(logs && logs.dataset.instance)) return;
    if (!("WebSocket" in window)) { startFallback(); return; }
    connect();
  });
})();
