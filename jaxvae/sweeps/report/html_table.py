"""The runs and seeds tables of report.html: a plain ``<table>`` that JavaScript, where it runs, makes
sortable (click a header: ascending, descending, back to the sweep's order), filterable (a box per grouping
field) and lets the reader hide or show each column. The "details" toggle is a checkbox and CSS alone, so
with JavaScript off the page is the same plain table with its details checkbox.

Everything is inline (``STYLE``, ``SCRIPT``): no file, library or network is needed to view the page.

Markup (what ``SCRIPT`` and tests/test_report_html.py rely on)::

    <div class="rt" id="t-runs">
      <input type="checkbox" class="dt" id="t-runs-details"><label for="t-runs-details">details ...</label>
      <div class="ctl" hidden></div>                  (filled by the script: filters, column toggles)
      <table><thead><tr><th class="c0 txt" data-group="1">run</th> ... <th class="c7 num d">MI</th>
      <tbody><tr><td class="c0 txt">2 layers, iwae k=5, seed=1</td> ... <td class="c4 num" data-v="-85.2">...

``c<i>``: the column; ``d``: a details column; ``data-group``: a grouping field (a filter box); ``data-v``:
the number a cell sorts by (other cells sort by their text, numbers in it read as numbers).

Imports only the standard library and ``jaxvae.sweeps.report.tables``.
"""

from __future__ import annotations

import html

from jaxvae.sweeps.report.tables import Table

STYLE = (".rt .d{display:none}.rt input.dt:checked~table .d{display:table-cell}"
         ".rt table .off{display:none!important}.rt table .on{display:table-cell!important}"
         ".rt tr[hidden]{display:none}.rt th.s{cursor:pointer;user-select:none}"
         ".rt th.s:hover{background:#e6e6e6}.rt th[aria-sort=ascending]::after{content:' \\25B2'}"
         ".rt th[aria-sort=descending]::after{content:' \\25BC'}"
         ".rt .ctl{font-size:13px;margin:.4em 0;display:flex;flex-wrap:wrap;gap:.3em 1em;align-items:center}"
         ".rt .ctl input[type=search]{width:9em}.rt .ctl details{flex-basis:100%}"
         ".rt .ctl details label{margin-right:1em;white-space:nowrap}.rt label.dtl{font-size:13px}"
         ".common{font-size:13px;color:#333}")


def _attr(v) -> str:
    return html.escape(str(v), quote=True)


def interactive_table(table: Table, tid: str) -> str:
    """The table as report.html's ``<div class="rt">`` (see the module docstring)."""
    n = len(table.headers)
    detail = table.detail or [False] * n
    grouping = table.grouping or [False] * n
    hidden = [h for h, d in zip(table.headers, detail) if d]
    parts = [f'<div class="rt" id="{_attr(tid)}">']
    if hidden:
        shown = ", ".join(hidden[:6]) + (", …" if len(hidden) > 6 else "")
        parts.append(f'<input type="checkbox" class="dt" id="{_attr(tid)}-details">'
                     f'<label class="dtl" for="{_attr(tid)}-details">details: {len(hidden)} more column'
                     f'{"s" if len(hidden) != 1 else ""} ({html.escape(shown)})</label>')
    parts.append('<div class="ctl" hidden></div>')
    head = []
    for i, h in enumerate(table.headers):
        cls = f"c{i} {'num' if table.numeric[i] else 'txt'}" + (" d" if detail[i] else "")
        head.append(f'<th class="{cls}"' + (' data-group="1"' if grouping[i] else "") + f">{html.escape(h)}</th>")
    body = []
    for r, row in enumerate(table.rows):
        cells = []
        for i, c in enumerate(row):
            cls = f"c{i} {'num' if table.numeric[i] else 'txt'}" + (" d" if detail[i] else "")
            key = table.keys[r][i] if table.keys else None
            v = f' data-v="{key!r}"' if isinstance(key, (int, float)) and not isinstance(key, bool) else ""
            cells.append(f'<td class="{cls}"{v}>{html.escape(str(c))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    parts.append(f"<table><thead><tr>{''.join(head)}</tr></thead><tbody>{''.join(body)}</tbody></table></div>")
    return "".join(parts)


SCRIPT = r"""
(function () {
  function text(td) { return td ? td.textContent.trim() : ""; }
  function setup(box) {
    var table = box.querySelector("table"), tbody = table.tBodies[0], ctl = box.querySelector(".ctl");
    var ths = Array.prototype.slice.call(table.tHead.rows[0].cells);
    var rows = Array.prototype.slice.call(tbody.rows);
    rows.forEach(function (tr, i) { tr.dataset.i = i; });
    var details = box.querySelector("input.dt"), state = {col: -1, dir: 0};
    var count = document.createElement("span");
    function cellsOf(i) { return box.querySelectorAll(".c" + i); }
    function key(tr, i) {
      var td = tr.cells[i];
      if (td && td.hasAttribute("data-v")) return {n: parseFloat(td.getAttribute("data-v")), t: ""};
      return {n: NaN, t: text(td)};
    }
    function compare(a, b, i) {
      var x = key(a, i), y = key(b, i);
      var ex = isNaN(x.n) && x.t === "", ey = isNaN(y.n) && y.t === "";
      if (ex || ey) return ex === ey ? 0 : (ex ? 1 : -1) * state.dir;  // blanks last either way
      if (!isNaN(x.n) && !isNaN(y.n)) return x.n - y.n;
      return x.t.localeCompare(y.t, undefined, {numeric: true, sensitivity: "base"});
    }
    function sortBy(i) {
      if (state.col !== i) { state.col = i; state.dir = 1; }
      else if (state.dir === 1) { state.dir = -1; }
      else { state.col = -1; state.dir = 0; }
      ths.forEach(function (th, j) {
        if (j === state.col) th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
        else th.removeAttribute("aria-sort");
      });
      var sorted = rows.slice().sort(function (a, b) {
        var c = state.col < 0 ? 0 : compare(a, b, state.col) * state.dir;
        return c || (a.dataset.i - b.dataset.i);
      });
      sorted.forEach(function (tr) { tbody.appendChild(tr); });
    }
    ths.forEach(function (th, i) {
      th.classList.add("s");
      th.tabIndex = 0;
      th.title = "sort (click again: descending, a third time: the sweep's order)";
      th.addEventListener("click", function () { sortBy(i); });
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") sortBy(i); });
    });
    var filters = [];
    function applyFilters() {
      var shown = 0;
      rows.forEach(function (tr) {
        var ok = filters.every(function (f) {
          var terms = f.input.value.toLowerCase().split(",").map(function (s) { return s.trim(); })
            .filter(function (s) { return s !== ""; });
          if (!terms.length) return true;
          var v = text(tr.cells[f.col]).toLowerCase();
          return terms.some(function (t) { return f.values[t] ? v === t : v.indexOf(t) >= 0; });
        });
        tr.hidden = !ok;
        if (ok) shown++;
      });
      count.textContent = shown + " of " + rows.length + " rows";
    }
    ths.forEach(function (th, i) {
      if (!th.hasAttribute("data-group")) return;
      var label = document.createElement("label"), input = document.createElement("input");
      var list = document.createElement("datalist"), values = {};
      list.id = box.id + "-values-" + i;
      rows.forEach(function (tr) { values[text(tr.cells[i]).toLowerCase()] = text(tr.cells[i]); });
      Object.keys(values).forEach(function (v) {
        var o = document.createElement("option"); o.value = values[v]; list.appendChild(o);
      });
      input.type = "search"; input.placeholder = "all"; input.dataset.col = i;
      input.setAttribute("list", list.id);
      input.title = "show rows whose " + text(th) + " is one of these (comma-separated; part of a value matches)";
      input.addEventListener("input", applyFilters);
      label.appendChild(document.createTextNode(text(th) + " "));
      label.appendChild(input);
      ctl.appendChild(label); ctl.appendChild(list);
      filters.push({col: i, input: input, values: values});
    });
    ctl.appendChild(count);
    var cols = document.createElement("details"), summary = document.createElement("summary");
    summary.textContent = "columns";
    cols.appendChild(summary);
    var toggles = [];
    ths.forEach(function (th, i) {
      var label = document.createElement("label"), box2 = document.createElement("input");
      box2.type = "checkbox"; box2.dataset.col = i;
      box2.checked = !th.classList.contains("d") || (details && details.checked);
      box2.addEventListener("change", function () {
        Array.prototype.forEach.call(cellsOf(i), function (c) {
          c.classList.toggle("off", !box2.checked);
          c.classList.toggle("on", box2.checked && c.classList.contains("d"));
        });
      });
      label.appendChild(box2);
      label.appendChild(document.createTextNode(" " + text(th)));
      cols.appendChild(label);
      toggles.push({th: th, input: box2, col: i});
    });
    ctl.appendChild(cols);
    if (details) details.addEventListener("change", function () {
      toggles.forEach(function (t) {
        if (!t.th.classList.contains("d")) return;
        t.input.checked = details.checked;
        Array.prototype.forEach.call(cellsOf(t.col), function (c) { c.classList.remove("on", "off"); });
      });
    });
    ctl.hidden = false;
    applyFilters();
  }
  Array.prototype.forEach.call(document.querySelectorAll("div.rt"), setup);
})();
"""
