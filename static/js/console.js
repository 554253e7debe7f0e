/* Modelbay console: small progressive enhancements. Every page works without it. */
(function () {
  "use strict";

  var POLL_INTERVAL_MS = 2000;

  function csrfToken(root) {
    var input = (root || document).querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  /* A block with a [data-poll-url] fetched again and put in its place; resolves to the
     fresh block, or null when the page is gone (404, 403). */
  function refresh(block) {
    return fetch(block.dataset.pollUrl, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 404 || response.status === 403) return null;
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null) return null;
        var template = document.createElement("template");
        template.innerHTML = html.trim();
        var fresh = template.content.firstElementChild;
        block.replaceWith(fresh);
        return fresh;
      });
  }

  /* The blocks that show the same service as the status block (the logs card), refreshed
     with it, so that none of them contradicts it. */
  function refreshFollowers(block) {
    document.querySelectorAll("[data-poll-url][data-service]").forEach(function (other) {
      if (other !== block && other.dataset.service === block.dataset.service && !other.contains(block)) {
        refresh(other).catch(function () { /* the next refresh tries again */ });
      }
    });
  }

  /* The service status block reloads itself while the service is settling, but not under
     a form being filled in (nor one shown with its errors): it waits for the submit. */
  function poll(block) {
    if (block.dataset.polling !== "on") return;
    window.setTimeout(function () {
      if (block.querySelector("form[data-edited]")) { poll(block); return; }
      refresh(block)
        .then(function (fresh) {
          if (fresh === null) return;
          refreshFollowers(fresh);
          poll(fresh);
        })
        .catch(function () { poll(block); });
    }, POLL_INTERVAL_MS);
  }

  function pretty(text) {
    try { return JSON.stringify(JSON.parse(text), null, 2); } catch (error) { return text; }
  }

  function showAnswer(form, label, ok, text) {
    var status = form.querySelector("[data-try-status]");
    var output = form.querySelector("[data-try-output]");
    status.textContent = label;
    status.className = "try-status " + (ok ? "is-ok" : "is-error");
    output.textContent = text;
    output.className = "response " + (ok ? "is-ok" : "is-error");
    output.hidden = false;
  }

  /* The request "Try it" sends: the textarea as JSON, or (the "Send file" button) the
     chosen file as the raw body with its own content type. null when there is nothing to send. */
  function tryRequest(form, submitter) {
    if (submitter && submitter.name === "send-file") {
      var file = form.elements.file.files[0];
      if (!file) {
        showAnswer(form, "Not sent", false, "Choose a file first.");
        return null;
      }
      return { contentType: file.type || "application/octet-stream", body: file };
    }
    var body = form.elements.body.value;
    try { JSON.parse(body); } catch (error) {
      showAnswer(form, "Not sent", false, "The request body is not valid JSON: " + error.message);
      return null;
    }
    return { contentType: "application/json", body: body };
  }

  /* "Try it": send to the predict API with the session cookie and show the answer. */
  function setUpTryIt(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var request = tryRequest(form, event.submitter);
      if (request === null) return;
      var buttons = form.querySelectorAll("button[type=submit]");
      buttons.forEach(function (button) { button.disabled = true; });
      fetch(form.action, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": request.contentType, Accept: "application/json", "X-CSRFToken": csrfToken(form) },
        body: request.body
      })
        .then(function (response) {
          return response.text().then(function (text) {
            var label = response.status + " " + (response.statusText || "");
            var wait = response.headers.get("Retry-After");
            if (wait) label += " · retry after " + wait + " s";
            showAnswer(form, label.trim(), response.ok, pretty(text));
          });
        })
        .catch(function (error) { showAnswer(form, "Network error", false, String(error)); })
        .then(function () { buttons.forEach(function (button) { button.disabled = false; }); });
    });
  }

  function copyWithSelection(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    document.execCommand("copy");
    area.remove();
  }

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { copyWithSelection(text); });
    }
    copyWithSelection(text);
    return Promise.resolve();
  }

  function setUpCopy(button) {
    button.addEventListener("click", function () {
      var target = document.querySelector(button.dataset.copy);
      copyText(target.textContent).then(function () {
        var label = button.textContent;
        button.textContent = "Copied";
        window.setTimeout(function () { button.textContent = label; }, 1500);
      });
    });
  }

  function markEdited(event) {
    if (event.target.form) event.target.form.dataset.edited = "";
  }

  /* Delegated, so that forms in a refreshed status block ask too. */
  function confirmSubmit(event) {
    var form = event.target;
    if (form.matches("form[data-confirm]") && !window.confirm(form.dataset.confirm)) event.preventDefault();
  }

  /* Uploads take a moment: say so and stop double submits. */
  function setUpBusy(button) {
    button.form.addEventListener("submit", function () {
      window.setTimeout(function () {
        button.disabled = true;
        button.textContent = button.dataset.busyLabel;
      }, 0);
    });
  }

  function closeMenusOnOutsideClick(event) {
    document.querySelectorAll("details.user-menu[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    });
    var toggle = document.querySelector("[data-nav-toggle]");
    var nav = toggle && document.getElementById(toggle.getAttribute("aria-controls"));
    if (nav && !nav.contains(event.target) && !toggle.contains(event.target)) setNavOpen(toggle, false);
  }

  /* On a phone the side navigation opens over the page from the menu button. */
  function setNavOpen(toggle, open) {
    document.body.classList.toggle("nav-open", open);
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
  }

  function setUpNavToggle(toggle) {
    toggle.addEventListener("click", function () {
      setNavOpen(toggle, toggle.getAttribute("aria-expanded") !== "true");
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape") setNavOpen(toggle, false);
    });
  }

  function each(selector, setUp) {
    document.querySelectorAll(selector).forEach(setUp);
  }

  document.documentElement.classList.add("js");
  document.addEventListener("DOMContentLoaded", function () {
    each("[data-poll-url]", poll);
    each("[data-try-it]", setUpTryIt);
    each("[data-copy]", setUpCopy);
    each("[data-busy-label]", setUpBusy);
    each("[data-nav-toggle]", setUpNavToggle);
    each("select[data-autosubmit]", function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
    document.addEventListener("click", closeMenusOnOutsideClick);
    document.addEventListener("submit", confirmSubmit);
    document.addEventListener("input", markEdited);
  });
})();
