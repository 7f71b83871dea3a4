// The little behaviour the portal needs on top of htmx: confirmation dialogs and polite refreshes.
// Everything works without it: links open full confirmation pages and the board reloads by hand.
(function () {
  "use strict";

  function dialog() {
    return document.getElementById("confirm-dialog");
  }

  // Live parts refresh only while the person is not busy with them: no open dialog, no text being
  // typed, and no keyboard focus inside the part that would be replaced (the focus would be lost).
  window.portalMayRefresh = function () {
    if (document.hidden) return false;
    if (document.querySelector("dialog[open]")) return false;
    var active = document.activeElement;
    if (!active || !active.closest) return true;
    if (active.closest("textarea, input[type=text], input[type=search]")) return false;
    return !(active.closest("#board, #promotion-live") && active.matches(":focus-visible"));
  };

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

  // A confirmation that could not be loaded as a dialog is opened as its own page, which says why.
  document.addEventListener("htmx:responseError", function (event) {
    if (event.detail.target && event.detail.target.id === "dialog-body") {
      window.location.assign(event.detail.pathInfo.requestPath);
    }
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
