// The little behaviour the portal needs on top of htmx: confirmation dialogs and polite refreshes.
// Everything works without it: links open full confirmation pages and the board reloads by hand.
(function () {
  "use strict";

  function dialog() {
    return document.getElementById("confirm-dialog");
  }

  var LIVE = "#board, #promotion-live";

  // A time the script writes, as the server writes its own: in the portal's time zone (the footer
  // names it), not the browser's, so a refreshed time never jumps hours away from the rest of the page.
  var clock = (function () {
    var options = { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" };
    try {
      return new Intl.DateTimeFormat("en-GB", Object.assign({ timeZone: document.documentElement.dataset.timeZone }, options));
    } catch (unknownZone) {  // a zone this browser does not know: its own, rather than no script at all
      return new Intl.DateTimeFormat("en-GB", options);
    }
  })();

  // What identifies an element again once a refresh has replaced it: its link or its id.
  function selectorFor(element) {
    if (element.id) return "#" + CSS.escape(element.id);
    var href = element.getAttribute && element.getAttribute("href");
    return href ? 'a[href="' + CSS.escape(href) + '"]' : null;
  }

  // Live parts refresh only while the person is not busy with them: no open dialog, no text being
  // typed or selected, and no keyboard focus on something a refresh could not give back.
  window.portalMayRefresh = function () {
    if (document.hidden) return false;
    if (document.querySelector("dialog[open]")) return false;
    var selection = window.getSelection && window.getSelection();
    if (selection && !selection.isCollapsed && selection.anchorNode && selection.anchorNode.parentElement &&
        selection.anchorNode.parentElement.closest(LIVE)) return false;
    var active = document.activeElement;
    if (!active || !active.closest) return true;
    if (active.closest("textarea, input[type=text], input[type=search]")) return false;
    return !(active.closest(LIVE) && active.matches(":focus-visible") && !selectorFor(active));
  };

  // A refresh morphs the live part in place (idiomorph): the same elements stay, so the scroll
  // positions of the page and of the board's own scrolling box, focus and selections survive it.
  // A <details> the reader opened or closed stays as they left it.
  if (window.Idiomorph) {
    Idiomorph.defaults.callbacks.beforeAttributeUpdated = function (attribute, element) {
      return !(attribute === "open" && element.tagName === "DETAILS");
    };
  }

  // Each refresh sends the tag of what is shown; the portal answers 304 while nothing it shows has
  // changed (releases/state.py), and htmx then leaves the part alone (htmx-config in base.html).
  document.addEventListener("htmx:configRequest", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.matches && elt.matches(LIVE) && elt.dataset.etag && event.detail.verb === "get") {
      event.detail.headers["If-None-Match"] = elt.dataset.etag;
    }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var elt = event.detail.elt;
    if (!event.detail.xhr || event.detail.xhr.status !== 304 || !elt || !elt.matches || !elt.matches(LIVE)) return;
    var notice = document.getElementById("refresh-failed");
    if (notice) notice.remove();
    var checked = elt.querySelector(".refreshed time");
    if (checked) {
      var now = new Date();
      checked.setAttribute("datetime", now.toISOString());
      checked.textContent = clock.format(now);
    }
  });

  // A live part's poll is skipped while the person is busy with it (decided here rather than in an
  // hx-trigger filter, which htmx would have to eval: the Content-Security-Policy forbids that).
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = event.detail.elt;
    if (elt && elt.matches && elt.matches(LIVE) && !window.portalMayRefresh()) event.preventDefault();
  });

  // Across a refresh, keyboard focus returns to the same link and open details stay open.
  // (The same link can appear in several cells, e.g. a release running in two environments: the
  // focus goes back to the same one by its position among them.)
  var kept = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail.target;
    kept = null;
    if (!event.detail.shouldSwap || !target || !target.matches || !target.matches(LIVE)) return;
    var active = document.activeElement;
    var selector = active && target.contains(active) ? selectorFor(active) : null;
    kept = {
      region: target.id,
      focus: selector,
      index: selector ? Array.prototype.indexOf.call(target.querySelectorAll(selector), active) : -1,
      open: Array.prototype.map.call(target.querySelectorAll("details[open][id]"), function (d) { return d.id; }),
    };
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    if (!kept || !event.detail.target || !event.detail.target.matches || !event.detail.target.matches(LIVE)) return;
    kept.open.forEach(function (id) {
      var details = document.getElementById(id);
      if (details) details.open = true;
    });
    var region = document.getElementById(kept.region);
    var again = kept.focus && region ? region.querySelectorAll(kept.focus)[Math.max(kept.index, 0)] : null;
    if (again) again.focus({ preventScroll: true });
    kept = null;
  });

  // A refresh that fails leaves the old content in place: say so, so nobody trusts stale states.
  function refreshFailed(event) {
    var target = event.detail.target;
    if (!target || !target.matches || !target.matches(LIVE)) return;
    var notice = document.getElementById("refresh-failed");
    if (!notice) {
      notice = document.createElement("p");
      notice.id = "refresh-failed";
      notice.className = "notice bad";
      notice.setAttribute("role", "status");
      target.parentNode.insertBefore(notice, target);
      var now = new Date();
      var since = document.createElement("time");
      since.setAttribute("datetime", now.toISOString());
      since.textContent = clock.format(now);
      notice.append("Could not refresh since ", since,
        ": the portal did not answer. What is shown may be out of date; it keeps trying.");
    }
  }
  document.addEventListener("htmx:sendError", refreshFailed);
  document.addEventListener("htmx:afterSwap", function (event) {
    var notice = document.getElementById("refresh-failed");
    if (notice && event.detail.target && event.detail.target.matches && event.detail.target.matches(LIVE)) notice.remove();
  });

  // A confirmed action is sent once: a second click while the first is on its way does nothing.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if ((form.getAttribute("method") || "get").toLowerCase() !== "post") return;
    if (form.dataset.submitting) {
      event.preventDefault();
      return;
    }
    form.dataset.submitting = "true";
    form.querySelectorAll("button").forEach(function (button) { button.setAttribute("aria-disabled", "true"); });
  });
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;  // back to a page kept in memory: its forms may be sent again
    document.querySelectorAll("form[data-submitting]").forEach(function (form) {
      delete form.dataset.submitting;
      form.querySelectorAll("button").forEach(function (button) { button.removeAttribute("aria-disabled"); });
    });
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target.id === "dialog-body" && !dialog().open) {
      dialog().showModal();
      var first = dialog().querySelector("textarea, input:not([type=hidden]), select, button");
      if (first) first.focus();
    }
  });

  // A session that expired answers a refresh with the sign-in page: show it whole, not inside the board.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var url = event.detail.xhr.responseURL || "";
    if (url.indexOf("/accounts/login/") !== -1) {
      event.detail.shouldSwap = false;
      window.location.assign(url);
    }
  });

  // A confirmation that could not be loaded as a dialog is opened as its own page, which says why;
  // a live part whose refresh failed says so.
  document.addEventListener("htmx:responseError", function (event) {
    if (event.detail.target && event.detail.target.id === "dialog-body") {
      window.location.assign(event.detail.pathInfo.requestPath);
      return;
    }
    refreshFailed(event);
  });

  document.addEventListener("click", function (event) {
    if (event.target.closest("[data-close-dialog]")) {
      event.preventDefault();
      dialog().close();
      return;
    }
    // Actions open their confirmation in the dialog; a click with a modifier still opens a tab.
    var link = event.target.closest("a[data-confirm]");
    if (!link || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    htmx.ajax("GET", link.getAttribute("href"), { target: "#dialog-body", swap: "innerHTML" });
  });

  document.addEventListener("close", function (event) {
    if (event.target === dialog()) document.getElementById("dialog-body").innerHTML = "";
  }, true);
})();
