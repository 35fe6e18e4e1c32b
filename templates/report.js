// The page script of every kdscope report. Each part works on the elements and data its section put on
// the page (ids, and keys of the page data) and does nothing where the section is absent.
// Runs after the charts' own DOMContentLoaded handlers (registered earlier), so they are drawn.
document.addEventListener("DOMContentLoaded", function () {
  "use strict";
  var D = JSON.parse(document.getElementById("kd-data").textContent);
  var selSuper = document.getElementById("sel-super");
  var selClass = document.getElementById("sel-class");
  var selWhich = document.getElementById("sel-which");
  function opt(sel, value, text) { var o = document.createElement("option"); o.value = value; o.textContent = text; sel.appendChild(o); }
  var supers = D.supers || [], classes = D.classes || [], classSuper = D.class_super || [];
  if (selSuper) supers.forEach(function (s, g) { opt(selSuper, g, s); });
  function superValue() { return selSuper ? +selSuper.value : -1; }

  function fillClasses() {
    if (!selClass) return;
    var g = superValue();
    while (selClass.options.length > 1) selClass.remove(1);
    classes.forEach(function (c, k) { if (g < 0 || classSuper[k] === g) opt(selClass, k, c); });
  }

  // Confusion matrices: trace 0 is grey (everything), trace 1 is coloured (the selection).
  function highlight() {
    var g = superValue();
    ["kd-cm-teacher", "kd-cm-student"].forEach(function (id) {
      var el = document.getElementById(id);
      if (!el || typeof Plotly === "undefined" || !el.data || !D.cm) return;
      var z = D.cm[id];
      var inSel = D.order.map(function (k) { return g < 0 || classSuper[k] === g; });
      var z2 = z.map(function (row, i) { return row.map(function (v, j) { return (inSel[i] || inSel[j]) ? v : null; }); });
      Plotly.restyle(el, { z: [z2] }, [1]);
    });
    document.querySelectorAll("#super-table tbody tr").forEach(function (tr, i) {
      tr.classList.toggle("selected", g >= 0 && tr.dataset.row === String(g));
    });
    document.querySelectorAll("#class-table tbody tr").forEach(function (tr) {
      tr.classList.toggle("selected", g >= 0 && classSuper[+tr.dataset.row] === g);
    });
  }

  // Image corpus.
  var corpus = document.getElementById("corpus");
  var items = corpus ? (D.corpus || []) : [];
  var imgs = items.map(function (it, n) {
    var im = document.createElement("img");
    im.src = "data:image/png;base64," + it.png;
    im.alt = classes[it.c];
    im.title = classes[it.c];
    if (it.t[0][0] !== it.c) im.classList.add("tw");
    if (it.s[0][0] !== it.c) im.classList.add("sw");
    im.addEventListener("click", function () { show(n); });
    corpus.appendChild(im);
    return im;
  });
  function filter() {
    if (!corpus) return;
    var g = superValue(), k = +selClass.value, w = selWhich.value, shown = 0;
    items.forEach(function (it, n) {
      var tw = it.t[0][0] !== it.c, sw = it.s[0][0] !== it.c;
      var ok = (g < 0 || classSuper[it.c] === g) && (k < 0 || it.c === k) &&
        (w === "all" || (w === "sw" && sw) || (w === "tw" && tw) || (w === "sw-tr" && sw && !tw) || (w === "tw-sr" && tw && !sw));
      imgs[n].style.display = ok ? "" : "none";
      shown += ok ? 1 : 0;
    });
    document.getElementById("corpus-count").textContent = shown + " of " + items.length + " images";
  }
  function topTable(title, top, truth, who) {
    var t = document.createElement("table");
    var cap = document.createElement("caption"); cap.textContent = title; cap.style.textAlign = "left"; t.appendChild(cap);
    top.forEach(function (p) {
      var tr = document.createElement("tr");
      if (p[0] === truth) tr.className = "truth";
      var a = document.createElement("td"); a.textContent = classes[p[0]];
      var b = document.createElement("td"); b.textContent = (100 * p[1]).toFixed(1) + " %"; b.style.textAlign = "right";
      var c = document.createElement("td"); c.style.width = "40%";
      var bar = document.createElement("div"); bar.className = "pbar" + (who ? " " + who : ""); bar.style.width = (100 * p[1]) + "%"; c.appendChild(bar);
      tr.appendChild(a); tr.appendChild(b); tr.appendChild(c); t.appendChild(tr);
    });
    return t;
  }
  var panel = document.getElementById("panel");
  function show(n) {
    var it = D.corpus[n];
    panel.innerHTML = "";
    var close = document.createElement("button"); close.textContent = "close"; close.onclick = function () { panel.style.display = "none"; };
    panel.appendChild(close);
    var big = document.createElement("img"); big.className = "big"; big.src = imgs[n].src; panel.appendChild(big);
    var p = document.createElement("p");
    p.textContent = "image #" + it.i + " · true: " + classes[it.c] + " (" + supers[classSuper[it.c]] + ")";
    panel.appendChild(p);
    panel.appendChild(topTable("teacher (" + D.teacher + ") top-5", it.t, it.c));
    panel.appendChild(topTable("student (" + D.student + ") top-5", it.s, it.c, "student"));
    if (D.maps) showMaps(it, imgs[n].src);
    panel.style.display = "block";
  }

  // Saliency maps in the panel: the image with the jet-coloured map drawn over it at 50 %.
  var mapMethod = D.maps ? D.maps.methods[0] : null;
  function jet(v) {
    function ch(c) { return Math.round(255 * Math.min(1, Math.max(0, 1.5 - Math.abs(4 * v - c)))); }
    return [ch(3), ch(2), ch(1)];
  }
  function mapFigure(src, b64, caption) {
    var fig = document.createElement("figure");
    var stack = document.createElement("div"); stack.className = "stack";
    var im = document.createElement("img"); im.src = src; stack.appendChild(im);
    if (b64) {
      // The map is a grayscale PNG: drawn on the canvas, then each pixel's gray level coloured.
      var h = D.maps.h, w = D.maps.w, gray = new Image();
      var cv = document.createElement("canvas"); cv.width = w; cv.height = h;
      gray.onload = function () {
        var ctx = cv.getContext("2d");
        ctx.drawImage(gray, 0, 0);
        var data = ctx.getImageData(0, 0, w, h);
        for (var p = 0; p < w * h; p++) {
          var c = jet(data.data[4 * p] / 255);
          data.data[4 * p] = c[0]; data.data[4 * p + 1] = c[1]; data.data[4 * p + 2] = c[2]; data.data[4 * p + 3] = 255;
        }
        ctx.putImageData(data, 0, 0);
        cv.setAttribute("data-drawn", "1");
      };
      gray.src = "data:image/png;base64," + b64;
      stack.appendChild(cv);
    }
    fig.appendChild(stack);
    var fc = document.createElement("figcaption"); fc.textContent = caption; fig.appendChild(fc);
    return fig;
  }
  function showMaps(it, src) {
    var box = document.createElement("div");
    var sel = document.createElement("select"); sel.className = "map-method";
    D.maps.methods.forEach(function (m) { var o = document.createElement("option"); o.value = m; o.textContent = m; sel.appendChild(o); });
    sel.value = mapMethod;
    var row = document.createElement("div"); row.className = "maps";
    function draw() {
      mapMethod = sel.value;
      row.innerHTML = "";
      row.appendChild(mapFigure(src, (D.maps.t[mapMethod] || {})[it.i], "teacher: " + D.teacher));
      row.appendChild(mapFigure(src, (D.maps.s[mapMethod] || {})[it.i], "student: " + D.student));
    }
    sel.addEventListener("change", draw);
    var lab = document.createElement("label"); lab.textContent = "Saliency "; lab.appendChild(sel);
    box.appendChild(lab); box.appendChild(row);
    panel.appendChild(box);
    draw();
  }

  // Embeddings: two scatter plots (teacher, student) of the selected embedding.
  var E = D.embed;
  var PALETTE = ["#1f77b4","#ff7f0e","#2ca02c","#d62728","#9467bd","#8c564b","#e377c2","#7f7f7f","#bcbd22","#17becf",
                 "#aec7e8","#ffbb78","#98df8a","#ff9896","#c5b0d5","#c49c94","#f7b6d2","#c7c7c7","#dbdb8d","#9edae5"];
  var corpusByIndex = {};
  items.forEach(function (it, n) { corpusByIndex[it.i] = n; });
  function thumb(i) {
    if (corpusByIndex[i] !== undefined) return "data:image/png;base64," + D.corpus[corpusByIndex[i]].png;
    return E.thumbs[i] ? "data:image/jpeg;base64," + E.thumbs[i] : "";
  }
  var selMethod = document.getElementById("emb-method"), selColour = document.getElementById("emb-colour");
  // WebGL where the browser has it (fast for 10,000s of points); SVG otherwise (headless, print).
  var hasGL = (function () {
    try { var c = document.createElement("canvas"); return !!(c.getContext("webgl") || c.getContext("experimental-webgl")); }
    catch (err) { return false; }
  })();
  function embSet(side) { return E.sets[E.models[side] + "|" + selMethod.value]; }
  function embInfo(side, n) {
    var set = embSet(side), i = set.i[n], top = E.tops[i];
    var box = document.getElementById("emb-info");
    box.innerHTML = "";
    var im = document.createElement("img"); im.src = thumb(i); box.appendChild(im);
    var txt = document.createElement("div");
    var p = document.createElement("p");
    p.textContent = "image #" + i + " · true: " + classes[top[0]] + " · " + E.models[side] + " (" + selMethod.value +
      "), log density " + set.k[n];
    txt.appendChild(p);
    txt.appendChild(topTable("teacher (" + D.teacher + ")", top[1].slice(0, 3), top[0]));
    txt.appendChild(topTable("student (" + D.student + ")", top[2].slice(0, 3), top[0], "student"));
    box.appendChild(txt);
    box.setAttribute("data-point", side + ":" + n);
  }
  function drawEmb() {
    [0, 1].forEach(function (side) {
      var el = document.getElementById("emb-plot-" + side), set = embSet(side), how = selColour.value;
      var marker = { size: 5, opacity: 0.85 };
      if (how === "kde") { marker.color = set.k; marker.colorscale = "Viridis"; marker.showscale = true; marker.colorbar = { title: { text: "log p" } }; }
      else if (how === "correct") { marker.color = set.c.map(function (c) { return c ? D.palette.correct : D.palette.wrong; }); }
      else { marker.color = set.p.map(function (c) { return PALETTE[c % PALETTE.length]; }); }
      var trace = { type: hasGL ? "scattergl" : "scatter", mode: "markers", x: set.x, y: set.y, marker: marker,
        text: set.p.map(function (c, n) { return "#" + set.i[n] + " predicted " + classes[c]; }),
        hovertemplate: "%{text}<extra></extra>" };
      var layout = { title: { text: E.models[side] + ": " + selMethod.value }, showlegend: false,
        xaxis: { showticklabels: false, zeroline: false }, yaxis: { showticklabels: false, zeroline: false, scaleanchor: "x" },
        margin: { l: 10, r: 10, t: 40, b: 10 }, hovermode: "closest" };
      Plotly.react(el, [trace], layout, { responsive: true });
      el.setAttribute("data-trace", trace.type);
      if (!el.dataset.bound && el.on) {
        el.on("plotly_hover", function (ev) { embInfo(side, ev.points[0].pointIndex); });
        el.on("plotly_click", function (ev) { embInfo(side, ev.points[0].pointIndex); });
        el.dataset.bound = "1";
      }
    });
  }
  if (E && typeof Plotly !== "undefined") {
    E.methods.forEach(function (m) { opt(selMethod, m, m); });
    selMethod.addEventListener("change", drawEmb);
    selColour.addEventListener("change", drawEmb);
    drawEmb();
  }

  // Sortable tables.
  document.querySelectorAll("table.kdscope-frame").forEach(function (table) {
    var body = table.tBodies[0];
    Array.prototype.forEach.call(body.rows, function (tr, i) { tr.dataset.row = String(i); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.addEventListener("click", function () {
        var asc = th.dataset.sort !== "asc";
        th.dataset.sort = asc ? "asc" : "desc";
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          // Formatted cells carry their exact value in data-v.
          var x = a.cells[col].dataset.v || a.cells[col].textContent, y = b.cells[col].dataset.v || b.cells[col].textContent;
          var nx = parseFloat(x), ny = parseFloat(y);
          var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
          return asc ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      if (th.textContent.indexOf("delta_") === 0) {
        Array.prototype.forEach.call(body.rows, function (tr) {
          var v = parseFloat(tr.cells[col].dataset.v || tr.cells[col].textContent);
          if (v < 0) tr.cells[col].classList.add("neg"); else if (v > 0) tr.cells[col].classList.add("pos");
        });
      }
    });
  });

  // Superclass circular bars: measured on superclass-level predictions or as the mean of their classes.
  var polarView = document.getElementById("polar-view");
  if (polarView && D.polar) {
    polarView.setAttribute("data-shown", D.polar.shown);
    polarView.querySelectorAll("input").forEach(function (inp) {
      inp.addEventListener("change", function () {
        var v = D.polar.views[inp.value];
        Object.keys(v).forEach(function (m) {
          var el = document.getElementById("kd-polar-" + m);
          if (el && el.data && typeof Plotly !== "undefined") Plotly.restyle(el, { r: v[m], customdata: v[m] }, [0, 1]);
        });
        polarView.setAttribute("data-shown", inp.value);
      });
    });
  }

  // Clicking a polar sector selects its superclass.
  document.querySelectorAll("[id^=kd-polar]").forEach(function (el) {
    if (el.on && selSuper) el.on("plotly_click", function (ev) {
      var g = supers.indexOf(ev.points[0].theta);
      if (g >= 0) { selSuper.value = String(g); selSuper.dispatchEvent(new Event("change")); }
    });
  });

  if (selSuper) selSuper.addEventListener("change", function () { fillClasses(); highlight(); filter(); });
  if (selClass) selClass.addEventListener("change", filter);
  if (selWhich) selWhich.addEventListener("change", filter);
  fillClasses(); filter();
  // A link can preselect a superclass: report.html#super=<name or index> ...
  var m = /super=([^&]+)/.exec(location.hash);
  if (m && selSuper) {
    var want = decodeURIComponent(m[1]), g = supers.indexOf(want);
    if (g < 0 && /^[0-9]+$/.test(want)) g = +want;
    if (g >= 0 && g < supers.length) { selSuper.value = String(g); selSuper.dispatchEvent(new Event("change")); }
  }
  // ... and open an image's panel: #image=<position in the corpus>.
  var mi = /image=([0-9]+)/.exec(location.hash);
  if (mi && +mi[1] < items.length) show(+mi[1]);
  // ... and show an embedded point: #emb=<side 0|1>:<position>.
  var me = /emb=([01]):([0-9]+)/.exec(location.hash);
  if (me && E) embInfo(+me[1], +me[2]);
  // Printing lays the page out at the paper's width: redraw every chart to its new width, and back.
  function fitCharts() {
    if (typeof Plotly === "undefined") return;
    var print = matchMedia("print").matches;
    document.querySelectorAll(".js-plotly-plot").forEach(function (el) {
      if (el.offsetParent === null) return;
      if (print) Plotly.relayout(el, { width: el.parentElement.clientWidth });
      else Plotly.relayout(el, { width: null }).then(function () { Plotly.Plots.resize(el); });
    });
    document.documentElement.setAttribute("data-fitted", print ? "print" : "screen");
  }
  var printMedia = matchMedia("print");
  if (printMedia.addEventListener) printMedia.addEventListener("change", fitCharts);
  // ... and scroll to a section: #goto=<anchor> (with the others, e.g. #super=blue&goto=confusion).
  var mg = /goto=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (mg && document.getElementById(mg[1])) document.getElementById(mg[1]).scrollIntoView();
  // ... or show one section alone (with the navigation bar): #only=<anchor>, a view to share or capture.
  var mo = /only=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (mo && document.getElementById(mo[1])) {
    var keep = false, nav = document.querySelector("body > .bar");
    Array.prototype.forEach.call(document.body.children, function (el) {
      if (el.tagName === "H2") keep = el.id === mo[1];
      if (!keep && el.tagName !== "SCRIPT" && el !== nav && el.id !== "panel") el.style.display = "none";
    });
  }
  // Milliseconds from navigation to a drawn, interactive page (the scale check reads it).
  document.documentElement.setAttribute("data-ready-ms", String(Math.round(performance.now())));
  document.documentElement.setAttribute("data-ready", "1");
});
