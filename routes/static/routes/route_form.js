// Route forms: show only the credential inputs of the chosen provider. Without this script every
// provider's inputs are shown, each labelled with its provider name, and the form still works.
(function () {
  "use strict";

  function sync(container) {
    if (!container) return;
    var select = container.querySelector('select[name$="provider"]');
    if (!select) return;
    container.querySelectorAll("[data-provider]").forEach(function (input) {
      var row = input.closest(".form-row") || input.parentElement;
      row.hidden = input.getAttribute("data-provider") !== select.value;
    });
  }

  function containerOf(element) {
    return element.closest(".inline-related") || element.form;
  }

  document.addEventListener("change", function (event) {
    if (event.target.matches && event.target.matches('select[name$="provider"]')) {
      sync(containerOf(event.target));
    }
  });
  document.addEventListener("formset:added", function (event) { sync(event.target); });
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".inline-related").forEach(sync);
    var routeForm = document.getElementById("providerroute_form");
    if (routeForm) sync(routeForm);
  });
})();
