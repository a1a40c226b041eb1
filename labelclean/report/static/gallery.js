(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("gallery-data").textContent);
  var items = data.items, body = document.body, root = document.getElementById("gallery");
  var RANK = 0, ID = 1, GIVEN = 2, PRED = 3, PROB = 4, PN = 5, LOSS = 6, THUMB = 7, HREF = 8,
    SCORE = 9;
  var state = {page: 0, size: 100, given: "", pred: "", q: "", order: "rank"};
  var view = items;
  var byId = function (id) { return document.getElementById(id); };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function fmt(x, d) { return Number(x).toFixed(d); }
  function num(x) { return Number(x).toPrecision(3); }

  function fillSelect(sel, values) {
    values.forEach(function (v) {
      var o = el("option", null, v); o.value = v; sel.appendChild(o);
    });
  }
  function present(col) {
    var seen = {}, out = [];
    items.forEach(function (it) { seen[it[col]] = true; });
    data.classes.forEach(function (c) { if (seen[c]) { out.push(c); delete seen[c]; } });
    return out.concat(Object.keys(seen).sort());
  }

  function card(it) {
    var c = el("div", "gitem");
    var t = el(it[HREF] ? "a" : "div", "thumb");
    if (it[HREF]) { t.href = it[HREF]; t.target = "_blank"; t.title = "open the original image"; }
    if (it[THUMB]) {
      var img = el("img");
      img.alt = it[ID];
      img.src = "data:image/png;base64," + it[THUMB];
      t.appendChild(img);
    } else {
      t.appendChild(el("span", "noimg", "no thumbnail"));
    }
    c.appendChild(t);
    var top = el("div", "top");
    var id = el("span", "id", it[ID]); id.title = it[ID];
    top.appendChild(id);
    top.appendChild(el("span", "rank", "#" + it[RANK]));
    c.appendChild(top);
    var lab = el("div", "lab");
    lab.title = "given label \u2192 predicted label (model probability)";
    lab.appendChild(el("span", "given", it[GIVEN]));
    lab.appendChild(document.createTextNode(" \u2192 "));
    lab.appendChild(el("b", null, it[PRED]));
    lab.appendChild(el("span", "muted", " " + fmt(it[PROB], 2)));
    c.appendChild(lab);
    var first = data.has_score ? "score " + num(it[SCORE]) : "p_noisy " + fmt(it[PN], 2);
    c.appendChild(el("div", "muted meta", first + " \u00b7 loss " + num(it[LOSS])));
    c.title = "rank " + it[RANK] + (data.has_score ? ", score " + num(it[SCORE]) : "") +
      ", loss " + num(it[LOSS]) + ", p_noisy " + fmt(it[PN], 3) + ", p(predicted) " +
      fmt(it[PROB], 3);
    return c;
  }
  function row(it) {
    var tr = el("tr");
    var cells = [String(it[RANK]), it[ID], it[GIVEN], it[PRED], fmt(it[PROB], 3), fmt(it[PN], 3),
      fmt(it[LOSS], 4)];
    if (data.has_score) cells.push(num(it[SCORE]));
    cells.forEach(function (v, i) {
      tr.appendChild(el("td", i === 1 || i === 2 || i === 3 ? "txt" : null, v));
    });
    return tr;
  }

  function pager(div, pages) {
    div.replaceChildren();
    function btn(label, page, off) {
      var b = el("button", null, label); b.disabled = off;
      b.addEventListener("click", function () { state.page = page; render(); });
      div.appendChild(b);
    }
    btn("\u00ab", 0, state.page === 0);
    btn("\u2039 prev", state.page - 1, state.page === 0);
    var start = view.length ? state.page * state.size + 1 : 0;
    var end = Math.min(view.length, (state.page + 1) * state.size);
    div.appendChild(el("span", null, " page " + (state.page + 1) + " of " + pages + " (items " +
      start + "\u2013" + end + " of " + view.length + ") "));
    btn("next \u203a", state.page + 1, state.page >= pages - 1);
    btn("\u00bb", pages - 1, state.page >= pages - 1);
  }

  function render() {
    var pages = Math.max(1, Math.ceil(view.length / state.size));
    state.page = Math.min(Math.max(0, state.page), pages - 1);
    var start = state.page * state.size, end = Math.min(view.length, start + state.size);
    var frag = document.createDocumentFragment();
    var make = data.kind === "images" ? card : row;
    for (var i = start; i < end; i++) frag.appendChild(make(view[i]));
    root.replaceChildren(frag);
    pager(byId("pager-top"), pages);
    pager(byId("pager-bottom"), pages);
    body.setAttribute("data-gallery-items", String(end - start));
    body.setAttribute("data-gallery-total", String(view.length));
  }

  function update() {
    var q = state.q.toLowerCase();
    view = items.filter(function (it) {
      return (!state.given || it[GIVEN] === state.given) &&
        (!state.pred || it[PRED] === state.pred) && (!q || it[ID].toLowerCase().indexOf(q) >= 0);
    });
    if (state.order === "rank-desc") view = view.slice().reverse();
    if (state.order === "given") {
      var order = {};
      data.classes.forEach(function (c, i) { order[c] = i; });
      view = view.slice().sort(function (a, b) {
        return (order[a[GIVEN]] - order[b[GIVEN]]) || (a[RANK] - b[RANK]);
      });
    }
    state.page = 0;
    render();
  }

  fillSelect(byId("f-given"), present(GIVEN));
  fillSelect(byId("f-pred"), present(PRED));
  function onChange(id, key) {
    byId(id).addEventListener("change", function (e) { state[key] = e.target.value; update(); });
  }
  onChange("f-given", "given");
  onChange("f-pred", "pred");
  onChange("f-order", "order");
  byId("f-size").addEventListener("change", function (e) {
    state.size = Number(e.target.value); state.page = 0; render();
  });
  var timer = null;
  byId("f-q").addEventListener("input", function (e) {
    clearTimeout(timer);
    timer = setTimeout(function () { state.q = e.target.value; update(); }, 150);
  });
  update();
  body.setAttribute("data-gallery-ready", "1");
})();
