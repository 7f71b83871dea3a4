// Starts ReDoc from the data attributes of #redoc-container: no inline script, so the API docs
// page keeps a Content-Security-Policy (templates/drf_spectacular/redoc.html).
(function () {
  "use strict";
  var container = document.getElementById("redoc-container");
  Redoc.init(container.dataset.schemaUrl, JSON.parse(container.dataset.settings || "{}"), container);
})();
