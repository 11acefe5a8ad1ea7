// Keep the Jupyter widgets HTML manager on this site. Loaded (before require.js and
// embed-amd.js) only on pages that carry saved widget state.
//
// * embed-amd.js bundles @jupyter-widgets/base, /controls and /output, so the widgets in
//   this book never need a download. For any other widget module it would fall back to
//   jsDelivr; it takes that address from a `data-jupyter-widgets-cdn` attribute on any
//   <script> tag, so it is pointed at this site's own _static/jupyter-widgets/ folder.
// * The manager finds its icon fonts next to the URL require.js gives its module, so that
//   module is mapped to _static/jupyter-widgets/ (a `require` object defined before
//   require.js loads is its configuration).
// * Widget labels are typeset with the MathJax 2 call MathJax.Hub.Queue; the site runs
//   MathJax 3, so a small MathJax.Hub forwards to MathJax.typesetPromise.
(function () {
  var me = document.currentScript;
  var staticRoot = new URL(".", me ? me.src : document.baseURI).href; // .../_static/
  var widgets = staticRoot + "jupyter-widgets/";

  window.__jupyter_widgets_assets_path__ = widgets;
  window.require = {
    paths: { "@jupyter-widgets/html-manager/dist": widgets.replace(/\/$/, "") },
  };

  var marker = document.createElement("script");
  marker.type = "text/plain";
  marker.setAttribute("data-jupyter-widgets-cdn", widgets);
  (me && me.parentNode ? me.parentNode : document.head).appendChild(marker);

  function mathjaxHub() {
    var mj = window.MathJax;
    if (!mj || mj.Hub) return;
    mj.Hub = {
      Queue: function () {
        var elements = [];
        for (var i = 0; i < arguments.length; i++) {
          var job = arguments[i];
          if (Array.isArray(job) && job[0] === "Typeset" && job[2]) elements.push(job[2]);
        }
        if (elements.length && mj.typesetPromise) {
          mj.typesetPromise(elements).catch(function () {});
        }
      },
    };
  }
  document.addEventListener("DOMContentLoaded", mathjaxHub);
  window.addEventListener("load", mathjaxHub);
})();
