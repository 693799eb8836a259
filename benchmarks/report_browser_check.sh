#!/usr/bin/env bash
# report.html in a real browser (issue #30). Generates the 40 runs of experiments/iwae_table1.py and the 8 of
# benchmarks/iwae_hier_static.py as fake run folders (tests/test_report_html.py's write_sweep: the launcher's
# run names and sweep.json, the experiments' configs, made-up numbers), writes their reports, and in headless
# Chromium (Debian's `chromium`; CHROMIUM=... for another binary):
#   - saves a screenshot of the 40-run report at 1400 px to docs/img/report_sweep.png (SCREENSHOT=... elsewhere);
#   - opens a small check page holding the report in a 1400-px frame; its script clicks the NLL header (three
#     times: ascending, descending, the sweep's order), types into the dataset, k and layers filter boxes,
#     unticks and reticks a column, ticks "details", and writes what the DOM then shows; `chromium --dump-dom`
#     prints it and this script asserts the order (ascending NLL = report.csv sorted by NLL), the filtered
#     rows, the hidden and shown columns, and that neither report scrolls horizontally at 1400 px;
#   - the same page reads the report in a second frame without scripts (sandbox): a plain table, every row,
#     the controls left hidden, the CSS-only details checkbox still working.
# Needs no network; about 10 s. Usage: benchmarks/report_browser_check.sh   (KEEP=1 keeps the temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
CHROME=${CHROMIUM:-chromium}
SCREENSHOT=${SCREENSHOT:-docs/img/report_sweep.png}
OUT=$(mktemp -d)
trap '[ -n "${KEEP:-}" ] && echo "kept $OUT" || rm -rf "$OUT"' EXIT

quiet() {  # Chromium's complaints (no D-Bus, no GPU) and the Debian wrapper's memory test
  grep -v -e "dbus" -e "Fontconfig" -e "unexpected operator" -e "bytes written to file" -e "shared_image" -e "^$" >&2 || true
}

chrome() {  # headless, offline, a throw-away profile
  "$CHROME" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$(mktemp -d -p "$OUT")" "$@" \
    2> >(quiet)
}

"$CHROME" --version 2> >(quiet)
for which in table1 static; do  # OUT/<which>/runs/<experiment>/<run>/results.json, reported as runs/<experiment>
  dir=$("$PY" tests/test_report_html.py "$OUT/$which/runs" "$which")
  (cd "$OUT/$which" && PYTHONPATH="$REPO" "$PY" -m jaxvae.sweeps.report "runs/$(basename "$dir")" --no-plots --quiet \
    2>/dev/null)
  ln -s "$dir" "$OUT/$which.sweep"
done

chrome --window-size=1400,1000 --screenshot="$OUT/shot.png" "file://$OUT/table1.sweep/report.html" >/dev/null
mkdir -p "$(dirname "$SCREENSHOT")"
"$PY" -c "import sys; from PIL import Image; Image.open(sys.argv[1]).quantize(64).save(sys.argv[2], optimize=True)" \
  "$OUT/shot.png" "$SCREENSHOT" 2>/dev/null || cp "$OUT/shot.png" "$SCREENSHOT"  # 64 colours where Pillow is there
echo "screenshot: $SCREENSHOT ($(stat -c %s "$SCREENSHOT") bytes)"

# The check page, next to report.html (with --allow-file-access-from-files the frames' documents are readable).
cat > "$OUT/check.html" <<'HTML'
<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">
<iframe id="f" src="report.html" style="width:1400px;height:900px;border:0"></iframe>
<iframe id="g" src="report.html" sandbox="allow-same-origin" style="width:1400px;height:300px;border:0"></iframe>
<pre id="out">not run</pre>
<script>
var loaded = 0, res = {};
function check() {  // #f runs the report's script; #g is the same page with scripts off
  var f = document.getElementById("f"), d = f.contentDocument, w = f.contentWindow, root = d.documentElement;
  res.scrollWidth = root.scrollWidth; res.clientWidth = root.clientWidth;
  var box = d.getElementById("t-runs"), table = box.querySelector("table");
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var col = function (name) { return heads.map(function (th) { return th.textContent.trim(); }).indexOf(name); };
  var shown = function () {
    return Array.prototype.filter.call(table.tBodies[0].rows, function (tr) { return !tr.hidden; });
  };
  var column = function (i) { return shown().map(function (tr) { return tr.cells[i].textContent.trim(); }); };
  var display = function (i) { return w.getComputedStyle(heads[i]).display; };
  res.tableRight = Math.round(table.getBoundingClientRect().right);
  res.controls = !box.querySelector(".ctl").hidden;
  res.filters = Array.prototype.map.call(box.querySelectorAll(".ctl input[type=search]"),
    function (x) { return heads[+x.dataset.col].textContent.trim(); });
  res.initial = column(0);
  var nll = heads.filter(function (th) { return th.textContent.indexOf("NLL") === 0; })[0];
  var n = heads.indexOf(nll);
  res.nllHeader = nll.textContent.trim();
  nll.click();
  res.ascending = column(n); res.ascendingNames = column(0); res.ariaSort = nll.getAttribute("aria-sort");
  nll.click();
  res.descending = column(n);
  nll.click();
  res.restored = column(0);
  var filter = function (name, text) {
    var input = box.querySelector('.ctl input[type=search][data-col="' + col(name) + '"]');
    if (!input) return null;
    input.value = text; input.dispatchEvent(new Event("input"));
    var got = column(col(name));
    input.value = ""; input.dispatchEvent(new Event("input"));
    return got;
  };
  res.datasetOmniglot = filter("dataset", "omniglot");
  res.k5 = filter("k", "5");
  res.k5or50 = filter("k", "5, 50");
  res.layers2 = filter("layers", "2");
  res.count = box.querySelector(".ctl span").textContent;
  var toggle = box.querySelector('.ctl details input[data-col="' + col("IWAE_1") + '"]');
  res.iwae1Before = display(col("IWAE_1"));
  toggle.click();
  res.iwae1Unticked = display(col("IWAE_1"));
  toggle.click();
  res.iwae1Ticked = display(col("IWAE_1"));
  var mi = col("MI");
  res.miBefore = display(mi);
  box.querySelector("input.dt").click();
  res.miDetails = display(mi);
  res.widthWithDetails = root.scrollWidth;
  box.querySelector("input.dt").click();
  res.miAfter = display(mi);

  var g = document.getElementById("g"), e = g.contentDocument, nojs = {};
  var gbox = e.getElementById("t-runs"), gth = gbox.querySelector("thead tr").cells;
  var gmi = Array.prototype.map.call(gth, function (th) { return th.textContent.trim(); }).indexOf("MI");
  nojs.controlsHidden = gbox.querySelector(".ctl").hidden;
  nojs.sortable = gbox.querySelectorAll("th.s").length;
  nojs.rows = gbox.querySelectorAll("tbody tr").length;
  nojs.miBefore = g.contentWindow.getComputedStyle(gth[gmi]).display;
  gbox.querySelector("input.dt").click();
  nojs.miDetails = g.contentWindow.getComputedStyle(gth[gmi]).display;
  res.nojs = nojs;
}
function done() {
  if (++loaded < 2) return;
  var out = document.getElementById("out");
  try { check(); out.textContent = JSON.stringify(res); } catch (err) { out.textContent = "error: " + err; }
}
document.getElementById("f").addEventListener("load", done);
document.getElementById("g").addEventListener("load", done);
</script></body></html>
HTML

for which in table1 static; do
  cp "$OUT/check.html" "$OUT/$which.sweep/check.html"
  chrome --allow-file-access-from-files --window-size=1440,1300 --virtual-time-budget=10000 --dump-dom \
    "file://$OUT/$which.sweep/check.html" > "$OUT/$which.dom"
done

"$PY" - "$OUT" <<'PYTHON'
import csv, html, json, re, sys
from pathlib import Path

out = Path(sys.argv[1])
for which, n in (("table1", 40), ("static", 8)):
    dom = (out / f"{which}.dom").read_text()
    m = re.search(r'<pre id="out">(.*?)</pre>', dom, re.S)
    assert m and m.group(1).startswith("{"), f"{which}: the check page did not run: {m.group(1) if m else dom[-500:]}"
    res = json.loads(html.unescape(m.group(1)))
    with open(out / f"{which}.sweep" / "report.csv") as f:
        rows = list(csv.DictReader(f))
    expected = [r["label"] for r in sorted(rows, key=lambda r: float(r["nll"]))]  # stable: the sweep's order on ties
    asc = [float(x) for x in res["ascending"]]
    print(f"{which}: {n} runs in the sweep's order, first {res['initial'][0]!r}, last {res['initial'][-1]!r}")
    print(f"  click on {res['nllHeader']!r}: ascending {asc[0]:.2f} .. {asc[-1]:.2f}, first {res['ascendingNames'][0]!r}"
          f" (= report.csv sorted by nll); again: descending; a third time: the sweep's order")
    print(f"  filters {res['filters']}: k '5' -> {len(res['k5'])} rows, '5, 50' -> {len(res['k5or50'])}, layers '2' -> "
          f"{len(res['layers2'])}" + (f", dataset 'omniglot' -> {len(res['datasetOmniglot'])}" if res["datasetOmniglot"]
                                       else ""))
    print(f"  width at 1400 px: page {res['scrollWidth']} px in a {res['clientWidth']} px frame, table ends at "
          f"{res['tableRight']} px; with details {res['widthWithDetails']} px")
    assert len(res["initial"]) == n and res["initial"] == [r["label"] for r in rows]  # the sweep's order
    assert res["controls"] and res["ariaSort"] == "ascending"
    assert asc == sorted(asc) and res["ascendingNames"] == expected, (res["ascendingNames"], expected)
    assert [float(x) for x in res["descending"]] == sorted(asc, reverse=True)
    assert res["restored"] == res["initial"]
    assert res["scrollWidth"] <= res["clientWidth"] == 1400, "the default table scrolls horizontally at 1400 px"
    assert res["iwae1Before"] == "table-cell" and res["iwae1Unticked"] == "none" and res["iwae1Ticked"] == "table-cell"
    assert res["miBefore"] == "none" and res["miDetails"] == "table-cell" and res["miAfter"] == "none"
    assert res["k5"] == ["5"] * (4 if which == "static" else 16)  # "5" is one of the values: exact, not 50
    assert sorted(set(res["k5or50"])) == (["5"] if which == "static" else ["5", "50"])
    assert res["layers2"] == ["2"] * (n // 2) and res["count"] == f"{n} of {n} rows"
    if which == "table1":
        assert res["datasetOmniglot"] == ["omniglot"] * 20 and len(res["k5or50"]) == 32
        assert res["filters"] == ["dataset", "layers", "objective", "k", "seed"]
    else:
        assert res["filters"] == ["layers", "objective", "k", "seed"]
    nojs = res["nojs"]
    print(f"  scripts off: {nojs['rows']} rows, controls hidden: {nojs['controlsHidden']}, sortable headers: "
          f"{nojs['sortable']}, details checkbox shows MI: {nojs['miBefore']} -> {nojs['miDetails']}")
    assert nojs["controlsHidden"] and nojs["sortable"] == 0 and nojs["rows"] == n
    assert nojs["miBefore"] == "none" and nojs["miDetails"] == "table-cell"
print("report_browser_check: OK")
PYTHON
