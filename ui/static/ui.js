// Micelio's own small script: progressive extras that pages work without.
// - copy buttons (hidden in the HTML, shown here): copy the text of the element named by data-copy;
// - line selection on file and blame pages: click a line number for #L10, shift-click for #L10-L20;
//   the selected rows are highlighted and the permalink follows the selection.
"use strict";
(function () {
  function copyText(text, done) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallbackCopy(text, done); });
    } else {
      fallbackCopy(text, done);
    }
  }

  function fallbackCopy(text, done) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); done(); } catch (e) { /* the text stays selectable */ }
    document.body.removeChild(area);
  }

  function showCopyButtons(root) {
    root.querySelectorAll("button.copy[hidden]").forEach(function (b) { b.hidden = false; });
  }

  var RANGE = /^#L(\d+)(?:-L(\d+))?$/;
  var anchorLine = null;

  function selectedRange() {
    var m = RANGE.exec(window.location.hash);
    if (!m) return null;
    var a = parseInt(m[1], 10), b = m[2] ? parseInt(m[2], 10) : a;
    return a <= b ? [a, b] : [b, a];
  }

  function highlight(scroll) {
    var table = document.querySelector("table[data-lines]");
    if (!table) return;
    table.querySelectorAll("tr.sel").forEach(function (tr) { tr.classList.remove("sel"); });
    var range = selectedRange();
    var link = document.querySelector("a.permalink");
    if (link) link.href = link.getAttribute("data-base") + (range ? window.location.hash : "");
    if (!range) return;
    var first = null;
    for (var n = range[0]; n <= range[1]; n++) {
      var tr = document.getElementById("L" + n);
      if (!tr) break;
      tr.classList.add("sel");
      if (!first) first = tr;
    }
    if (first && scroll) first.scrollIntoView({ block: "center" });
  }

  document.addEventListener("click", function (ev) {
    var target = ev.target instanceof Element ? ev.target : null;
    if (!target) return;
    var button = target.closest("button.copy[data-copy]");
    if (button) {
      var source = document.getElementById(button.getAttribute("data-copy"));
      if (!source) return;
      var label = button.textContent;
      copyText(source.textContent.trim(), function () {
        button.textContent = "Copied";
        button.classList.add("copied");
        setTimeout(function () { button.textContent = label; button.classList.remove("copied"); }, 2000);
      });
      return;
    }
    var ln = target.closest("table[data-lines] td.ln a[href^='#L']");
    if (ln && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
      ev.preventDefault();
      var line = parseInt(ln.getAttribute("href").slice(2), 10);
      var hash = "#L" + line;
      if (ev.shiftKey && anchorLine !== null && anchorLine !== line) {
        hash = "#L" + Math.min(anchorLine, line) + "-L" + Math.max(anchorLine, line);
      } else {
        anchorLine = line;
      }
      history.replaceState(null, "", hash);
      highlight(false);
    }
  });

  window.addEventListener("hashchange", function () { highlight(true); });
  document.addEventListener("DOMContentLoaded", function () {
    showCopyButtons(document);
    var range = selectedRange();
    if (range) anchorLine = range[0];
    highlight(true);
  });
  document.addEventListener("htmx:afterSwap", function (ev) { showCopyButtons(ev.target); });
})();
