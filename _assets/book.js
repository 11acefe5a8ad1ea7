// Behaviour of the book's header buttons, on every page (listed in _config.yml).
//
// 1. Sidebar buttons (the ☰ and contents buttons of the article header).
//    pydata-sphinx-theme >= 0.17.0 renders a navbar of its own (#pst-header) with a
//    hidden ☰ and a hidden contents button, and binds its sidebar dialogs to the
//    *first* `.primary-toggle` / `.secondary-toggle` of the document, that is to those
//    hidden buttons; sphinx-book-theme 1.3.0 (which pins pydata-sphinx-theme 0.17.1)
//    binds its wide-screen "collapse the sidebar" handler the same way. The visible
//    buttons of sphinx-book-theme's article header get no listener and do nothing.
//    Until that is fixed upstream, a click on a visible button is forwarded to the
//    bound one, which then does what the themes intend at that width (a dialog below
//    992 px, collapsing the sidebar above). book.css hides the extra navbar.
//    Upstream: https://github.com/pydata/pydata-sphinx-theme/issues/2451
//    Remove this part, and the "#pst-header" rules in book.css, once that is fixed.
//
// 2. The colour-mode button switches between light and dark directly. (The theme
//    cycles light -> auto -> dark; "auto" usually looks the same as the mode it
//    replaced, so the first click seemed to do nothing.)
//
// 3. On the search page, the search field of the page is focused (the theme's own
//    script focuses the hidden one of the search dialog).
//
// 4. Code, printed output, display math and tables that are wider than the text column
//    scroll sideways inside their own box: they get the class `bn-scroll-x`
//    (book.css), the mark the site check accepts for deliberate horizontal scrolling.
(function () {
  "use strict";

  function forwardToggles(selector) {
    var buttons = Array.prototype.slice.call(document.querySelectorAll(selector));
    var bound = buttons[0];
    buttons.slice(1).forEach(function (button) {
      button.addEventListener("click", function (event) {
        event.preventDefault();
        event.stopPropagation();
        bound.click();
      });
    });
  }

  function setMode(mode) {
    var root = document.documentElement;
    root.dataset.mode = mode;
    root.dataset.theme = mode;
    document.querySelectorAll(".dropdown-menu").forEach(function (el) {
      el.classList.toggle("dropdown-menu-dark", mode === "dark");
    });
    try {
      localStorage.setItem("mode", mode);
      localStorage.setItem("theme", mode);
    } catch (e) { /* storage unavailable: the mode lasts for this page */ }
    var prefersDark = window.matchMedia("(prefers-color-scheme: dark)");
    prefersDark.onchange = null;
    labelModeButtons();
  }

  function labelModeButtons() {
    var next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    document.querySelectorAll(".theme-switch-button").forEach(function (button) {
      button.setAttribute("aria-label", "Switch to " + next + " mode");
    });
  }

  // Capture phase on the document: runs before the theme's own listener on the button.
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest(".theme-switch-button");
    if (!button) return;
    event.preventDefault();
    event.stopImmediatePropagation();
    setMode(document.documentElement.dataset.theme === "dark" ? "light" : "dark");
    button.blur();
  }, true);

  var SCROLL_X = [
    "div.highlight",                     // code cells and code blocks
    ".cell_output .output.text_plain",   // printed text
    ".cell_output .output.stream",
    ".cell_output .output.traceback",
    "div.math",                          // display math
    ".pst-scrollable-table-container",   // tables
    "table.docutils",
  ].join(",");

  function markScrollBoxes() {
    document.querySelectorAll(".bd-article " + SCROLL_X.split(",").join(", .bd-article "))
      .forEach(function (el) { el.classList.add("bn-scroll-x"); });
    // HTML outputs that are tables (not animations or widgets, which must fit)
    document.querySelectorAll(".bd-article .cell_output .output.text_html").forEach(function (el) {
      if (el.querySelector("table") && !el.querySelector("img, canvas, svg, input")) {
        el.classList.add("bn-scroll-x");
      }
    });
  }

  // A scroll box whose content is wider than it says so (book.css: a thin bar and a
  // shade on the side where more is); checked again when the page width changes or a
  // dropdown opens (a closed one has no width).
  function markOverflows() {
    // the box, or the <pre> in it where that is what scrolls (code and printed output)
    document.querySelectorAll(".bn-scroll-x, .bn-scroll-x > pre").forEach(function (el) {
      if (!el.offsetWidth) return;
      var over = el.scrollWidth > el.clientWidth + 1;
      el.classList.toggle("bn-overflows", over);
      if (over && !el.dataset.bnWatched) {
        el.dataset.bnWatched = "1";
        el.addEventListener("scroll", function () {
          el.classList.toggle("bn-scrolled", el.scrollLeft > 1);
          el.classList.toggle("bn-at-end",
            el.scrollLeft + el.clientWidth >= el.scrollWidth - 1);
        }, {passive: true});
      }
    });
  }

  function ready() {
    forwardToggles(".primary-toggle");
    forwardToggles(".secondary-toggle");
    labelModeButtons();
    markScrollBoxes();
    markOverflows();
    window.addEventListener("resize", markOverflows);
    document.addEventListener("toggle", markOverflows, true);   // <details>
    document.addEventListener("click", function () { setTimeout(markOverflows, 50); });
    if (document.fonts) document.fonts.ready.then(markOverflows);
    if (document.getElementById("search-results")) {
      var field = document.querySelector(".bd-search-container form.bd-search input");
      if (field) { field.focus(); field.select(); }
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
})();
