"""``report.html``: one self-contained page that explains a run.

The page needs nothing but a browser: no network, no external CSS or JS. Its
style and scripts are package files (``static/report.css``, ``static/errors.js``,
``static/gallery.js``) inlined into the page. The gallery's data (one small
base64 PNG thumbnail per flagged image, :mod:`.gallery`) sits in one JSON
array; the script renders one page of it at a time, so the DOM stays small even
with tens of thousands of flagged samples. Everything user-supplied (paths,
class names) is escaped, and the script builds the gallery with
``textContent``, never ``innerHTML``.

For the browser test the script leaves markers on ``<body>``:
``data-js-errors`` (uncaught errors so far), ``data-gallery-items`` (items on
the page now), ``data-gallery-total`` (items passing the filters) and
``data-gallery-ready``.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
from importlib.resources import files
from pathlib import Path

import numpy as np
import pandas as pd

from .data import float_of
from .gallery import MAX_THUMBNAILS, THUMBNAIL_SECONDS
from .registry import figure_caption
from .run import RunFiles
from .tables import class_table, flagged_confusion

#: Per-class confusion among flagged samples is drawn as a matrix up to this many classes.
MAX_MATRIX_CLASSES = 25
MAX_UNREADABLE_ROWS = 200


@functools.cache
def static_text(name: str) -> str:
    """A file of the package's ``static/`` folder (the page's CSS and scripts)."""
    return (files(__package__) / "static" / name).read_text(encoding="utf-8")


def _e(x: object) -> str:
    # a file name's undecodable bytes show as U+FFFD (the page itself stays UTF-8)
    text = str(x).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return html.escape(text, quote=True)


def _num(x: float | int, digits: int = 4) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    if x is None or not np.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


def _row(label: str, shown: str, key: str | None = None, value: object = None) -> str:
    """A summary table row; ``data-key``/``data-value`` carry the raw value for tests."""
    attrs = ""
    if key is not None:
        attrs = f' data-key="{_e(key)}" data-value="{_e(value)}"'
    return f"<tr><th>{_e(label)}</th><td{attrs}>{shown}</td></tr>"


def summary_html(run: RunFiles) -> str:
    """The summary table: counts, noise rate, t_c, phases, model, time, unreadable."""
    r = run.run
    inp = r.get("input", {})
    mix = r.get("mixture_at_t_c") or {}
    timing = r.get("timing", {})
    params = r.get("params", {})
    n, flagged = int(r.get("samples", len(run.scores))), int(r.get("flagged", 0))
    rate = float(r.get("estimated_noise_rate", flagged / max(1, n)))
    epochs = timing.get("epochs_trained", len(run.metrics))
    verdict = r.get("verdict") or {}
    rows = [
        *([_row("verdict", _e(verdict.get("text", "")), "verdict", verdict.get("status"))]
          if verdict else []),
        _row("input", f"{_e(inp.get('source', '?'))} <span class=muted>({_e(inp.get('origin'))}, "
             f"{_e(inp.get('kind'))}, {len(run.classes)} classes)</span>"),
        _row("samples", _num(n), "samples", n),
        _row("flagged", f"{_num(flagged)} <span class=muted>(kept {_num(n - flagged)})</span>",
             "flagged", flagged),
        _row("estimated noise rate", f"{100 * rate:.2f}%", "estimated_noise_rate", rate),
    ]
    rows.append(_row("suspicion score", f"{_e(run.quantity)} <span class=muted>"
                     f"({_e(run.flag_rule)})</span>", "suspicion", run.suspicion))
    if not r.get("second_population_found", True) and flagged == 0:
        what = "losses" if run.suspicion == "loss" else "suspicion scores"
        rows.append(_row("second population", f"not found: the {what} look like one "
                         "population, so nothing was flagged"))
    threshold = _num(float_of(mix, "threshold"))
    spec = run.suspicion_spec
    if run.suspicion == "aum":
        cut = f"flag rule AUM &lt; 0, not the mixture's crossing {threshold}"
    elif spec is not None and spec.fixed_cut is not None:
        cut = f"flag rule score &gt; {spec.fixed_cut:g}, not the mixture's crossing {threshold}"
    else:
        cut = f"threshold l_c {threshold}"
    rows.append(_row(
        "t_c", f"epoch {_e(run.t_c)} of {_e(epochs)} trained "
        f"<span class=muted>(ΔL {_num(float_of(mix, 'delta_L'))}, mixture weight r "
        f"{_num(float_of(mix, 'r'), 3)}, {cut})</span>", "t_c", run.t_c,
    ))
    if r.get("stop_reason"):
        rows.append(_row("stopped", _e(r["stop_reason"])))
    spans = r.get("phase_boundaries") or {}
    if spans:
        # run.json is untrusted: its values are escaped like any user string
        text = ", ".join(f"{_e(k)}: epochs {_e(v[0])}–{_e(v[1])}" for k, v in spans.items())
        in_ii = r.get("t_c_in_phase_II")
        if in_ii is not None:
            text += f" <span class=muted>(t_c {'in' if in_ii else 'not in'} phase II)</span>"
        rows.append(_row("phases", text, "phase_boundaries", json.dumps(spans)))
    if "val_accuracy_at_t_c" in r:
        rows.append(_row("validation accuracy at t_c", f"{r['val_accuracy_at_t_c']:.4f}",
                         "val_accuracy_at_t_c", r["val_accuracy_at_t_c"]))
    truth = r.get("against_truth")
    if truth:
        rows.append(_row(
            "against the known noise",
            f"precision {truth['precision']:.3f}, recall {truth['recall']:.3f}, "
            f"F1 {truth['f1']:.3f} <span class=muted>(true noise rate "
            f"{100 * truth['true_noise_rate']:.1f}%)</span>",
        ))
    model = params.get("model") or run.model.get("model", "?")
    extra = ", pretrained" if params.get("pretrained") else ""
    size = (params.get("model_input") or {}).get("input_size")
    resized = f" resized to {'×'.join(map(str, size))}" if isinstance(size, list) else ""
    rows.append(_row("model", f"{_e(model)}{_e(extra)} <span class=muted>on "
                     f"{_e(params.get('device', '?'))}, input "
                     f"{_e('×'.join(map(str, inp.get('input_shape', []))))}{_e(resized)}"
                     "</span>", "model", model))
    total = timing.get("total_seconds")
    if total is not None:
        train, observe = timing.get("train_seconds", 0.0), timing.get("observe_seconds", 0.0)
        shown = (f"{total:.1f} s <span class=muted>(training {train:.1f} s, "
                 f"observing {observe:.1f} s)</span>")
        rows.append(_row("time taken", shown, "total_seconds", total))
    n_bad = len(run.unreadable) or int(inp.get("unreadable", 0))
    if n_bad:
        rows.append(_row("unreadable images", f'{_num(n_bad)} left out '
                         '<a href="#unreadable">(list)</a>', "unreadable", n_bad))
    return "<table class=summary>" + "".join(rows) + "</table>"


def settings_html(run: RunFiles) -> str:
    """All parameters and library versions, folded away."""
    def kv(d: dict) -> str:
        return "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in d.items())

    return (
        "<details><summary>All settings and versions</summary><div class=cols>"
        f"<table class=kv>{kv(run.run.get('params', {}))}</table>"
        f"<table class=kv>{kv(run.run.get('environment', {}))}</table></div></details>"
    )


def figures_html(figures: dict[str, bytes | str], run: RunFiles) -> str:
    """The figures as ``<figure>`` elements with captions (for ``run``'s suspicion
    and window), PNGs inline."""
    parts = []
    for name, png in figures.items():
        text = _e(figure_caption(name, run))
        if isinstance(png, str):
            parts.append(f"<figure><p class=warn>The {_e(name)} figure could not be drawn: "
                         f"{_e(png)}</p></figure>")
            continue
        data = base64.b64encode(png).decode("ascii")
        parts.append(
            f'<figure id="fig-{_e(name)}"><img alt="{_e(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{text} '
            f'<span class=muted>(figures/{_e(name)}.png)</span></figcaption></figure>'
        )
    return "".join(parts)


def _interval(d: object) -> str:
    """An estimate's ``{"value", "low", "high"}`` as text (run.json is untrusted)."""
    d = d if isinstance(d, dict) else {}
    v, lo, hi = (float_of(d, k) for k in ("value", "low", "high"))
    return "–" if math.isnan(v) else f"{v:.2f} <span class=muted>[{lo:.2f}, {hi:.2f}]</span>"


def estimate_html(run: RunFiles) -> str:
    """The run's estimate of its flags (``run.json``'s ``estimate``), overall and per
    class; empty for a run without canaries."""
    est = run.run.get("estimate")
    if not isinstance(est, dict):
        return ""
    head = ("<tr><th></th><th>samples</th><th>flagged</th><th>canaries</th>"
            "<th>precision of the flags</th><th>recall</th><th>wrong labels</th></tr>")

    def row(name: object, d: dict) -> str:
        return (f"<tr><td>{_e(name)}</td><td>{_e(d.get('samples', ''))}</td>"
                f"<td>{_e(d.get('flagged', ''))}</td><td>{_e(d.get('canaries', ''))}</td>"
                f"<td>{_interval(d.get('precision'))}</td><td>{_interval(d.get('recall'))}</td>"
                f"<td>{_interval(d.get('noise_share'))}</td></tr>")

    classes = [c for c in est.get("per_class") or [] if isinstance(c, dict)]
    body = row("all", est) + "".join(row(c.get("name", "?"), c) for c in classes)
    learned = ("yes" if est.get("learned") else "no")
    return ("<h3 id=estimate>How likely the flags are right</h3><p class=muted>Estimated from "
            "the run's canaries: samples held out under their own labels and trained on under "
            "wrong ones (90% intervals; docs/usage.md, \"The run's own estimate\"). Labels "
            f"fitted better than the canaries' wrong ones: {_e(learned)} (AUC "
            f"{_num(float_of(est, 'auc'), 3)}); wrong labels left among the kept samples: "
            f"{_interval(est.get('residual_share'))}.</p>"
            f"<table class=grid id=estimate-table>{head}{body}</table>")


def class_table_html(run: RunFiles) -> str:
    """Per-class table and, for up to MAX_MATRIX_CLASSES classes, the flagged confusion matrix."""
    t = class_table(run)
    head = ("<tr><th>class</th><th>samples</th><th>flagged</th><th>flagged %</th>"
            "<th>flagged ones predicted as</th></tr>")
    body = "".join(
        f"<tr><td>{_e(c)}</td><td>{n:,}</td><td>{f:,}</td><td>{pct:.1f}</td>"
        f"<td class=txt>{_e(preds)}</td></tr>"
        for c, n, f, pct, preds in zip(
            t["class"], t["samples"], t["flagged"], t["flagged_pct"],
            t["flagged_predicted_as"], strict=True,
        )
    )
    out = f"<table class=grid id=class-table>{head}{body}</table>"
    if 0 < len(run.classes) <= MAX_MATRIX_CLASSES and run.scores["flagged"].any():
        out += confusion_html(flagged_confusion(run))
    return out


def confusion_html(table: pd.DataFrame) -> str:
    """Given (rows) x predicted (columns) counts, shaded by count."""
    top = max(1, int(table.to_numpy().max()))
    head = "<tr><th>given ↓ / predicted →</th>" + "".join(
        f"<th>{_e(c)}</th>" for c in table.columns) + "</tr>"
    rows = []
    for given, counts in table.iterrows():
        cells = "".join(
            f'<td style="background:rgba(192,57,43,{0.08 + 0.7 * v / top:.2f})">{v}</td>'
            if v else "<td class=zero>·</td>"
            for v in counts.to_numpy()
        )
        rows.append(f"<tr><th>{_e(given)}</th>{cells}</tr>")
    return ("<h3>Flagged samples: given label → predicted label</h3>"
            f"<table class='grid confusion'>{head}{''.join(rows)}</table>")


def unreadable_html(run: RunFiles) -> str:
    u = run.unreadable
    if not len(u):
        return ""
    shown = u.head(MAX_UNREADABLE_ROWS)
    rows = "".join(f"<tr><td>{_e(p)}</td><td>{_e(r)}</td></tr>"
                   for p, r in zip(shown["path"], shown["reason"], strict=True))
    more = (f"<p class=muted>… and {len(u) - len(shown):,} more: see unreadable.csv</p>"
            if len(u) > len(shown) else "")
    return (f"<section id=unreadable><h2>Unreadable images ({len(u):,})</h2>"
            "<p>These files could not be decoded and were left out of training and of the "
            "cleaned dataset.</p>"
            f"<table class=grid><tr><th>path</th><th>reason</th></tr>{rows}</table>{more}"
            "</section>")


def _json_for_script(obj: object) -> str:
    # Inside <script> only "</" could end the element early; escaping every "<" is simplest.
    return json.dumps(obj, separators=(",", ":")).replace("<", "\\u003c")


def verdict_banner_html(run: RunFiles) -> str:
    """A banner at the top of the page for a withheld run (flags forced or not)."""
    verdict = run.run.get("verdict") or {}
    if verdict.get("status") != "withheld":
        return ""
    head = ("Withheld, flags forced: the flags below were written on request, but the run "
            "is not convincing" if verdict.get("forced") else
            "Withheld: nothing was flagged, because the run is not convincing")
    return (f"<div class=banner id=verdict-banner role=alert><b>{_e(head)}.</b> "
            f"{_e(verdict.get('reason', ''))}.<br>Try: {_e(verdict.get('advice', ''))}.</div>")


def render_html(run: RunFiles, figures: dict[str, bytes | str], gallery: dict) -> str:
    """The whole page as one string."""
    inp = run.run.get("input", {})
    n_flagged = len(gallery["items"])
    title = f"labelclean report: {Path(inp.get('source', run.root.name)).name}"
    omitted = gallery["thumbs_omitted"]
    omitted_note = (
        f"<p class=muted>Only the {n_flagged - omitted:,} most suspicious samples have "
        f"thumbnails (at most {MAX_THUMBNAILS:,}, made within {THUMBNAIL_SECONDS:.0f} s); the "
        f"other {omitted:,} are listed without one and link to the original file.</p>"
        if omitted else ""
    )
    id_column = "path" if gallery["kind"] == "images" else "row"
    high = "high-loss" if run.suspicion == "loss" else "high-score"
    measure = ("the run's suspicion <code>score</code> (what the ranking sorts by)"
               if gallery["has_score"] else
               f"<code>p_noisy</code> (posterior of the {high} population)")
    intro = (
        "Each card: path and rank; given label → <b>predicted label</b> with the model's "
        f"probability; {measure} and the loss at t_c (hover for all numbers). A thumbnail "
        "opens the original image. A sample the model fitted late (at t_c it agrees with its "
        "label, but ranked it below another class on average) shows that runner-up class "
        "after the arrow, with the given label's probability; see its <code>reason</code> in "
        "<code>flagged_samples.csv</code>."
        if gallery["kind"] == "images" else
        "One row per flagged sample: its row in the input CSV, the given and predicted labels, "
        f"the model's probability, <code>p_noisy</code> (posterior of the {high} population) "
        "and the loss at t_c."
    )
    return "".join([
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>{_e(title)}</title><style>{static_text('report.css')}</style></head>",
        '<body data-js-errors="0" data-gallery-items="0" data-gallery-total="0" '
        'data-gallery-ready="0">',
        f"<script>{static_text('errors.js')}</script>",
        f"<header><h1>{_e(title)}</h1><nav><a href=#summary>Summary</a>"
        "<a href=#training>Training</a><a href=#gallery-section>Flagged samples</a>"
        "<a href=#classes>Classes</a></nav></header><main>",
        verdict_banner_html(run),
        f"<section id=summary><h2>Summary</h2>{summary_html(run)}{estimate_html(run)}"
        f"{settings_html(run)}</section>",
        f"<section id=training><h2>Training and the "
        f"{'loss' if run.suspicion == 'loss' else 'suspicion-score'} populations</h2>"
        f"{figures_html(figures, run)}</section>",
        f"<section id=gallery-section><h2>Flagged samples ({n_flagged:,}), most suspicious "
        "first</h2>",
        f"<p class=muted>{intro} "
        "To act on them, edit the <code>action</code> column of "
        "<code>flagged_samples.csv</code> (<code>remove</code>, <code>keep</code> or "
        "<code>relabel:&lt;class&gt;</code>) and run <code>labelclean apply "
        f"{_e(run.root)} --out DIR</code>.</p>{omitted_note}",
        GALLERY_CONTROLS.replace("part of the path", f"part of the {id_column}"),
        (f"<div id=gallery class=cards data-id-column={id_column}></div>"
         if gallery["kind"] == "images" else
         "<table class=grid id=gallery-table><thead><tr><th>rank</th><th>row</th>"
         "<th>given</th><th>predicted</th><th>p(pred)</th><th>p_noisy</th><th>loss</th>"
         f"{'<th>score</th>' if gallery['has_score'] else ''}</tr></thead>"
         "<tbody id=gallery></tbody></table>"),
        "<div class=pager id=pager-bottom></div></section>",
        f"<section id=classes><h2>Per class</h2>{class_table_html(run)}</section>",
        unreadable_html(run),
        "</main>",
        f'<script type="application/json" id="gallery-data">{_json_for_script(gallery)}</script>',
        f"<script>{static_text('gallery.js')}</script></body></html>",
    ])


GALLERY_CONTROLS = """
<div class=controls>
<label>given <select id=f-given><option value="">any</option></select></label>
<label>predicted <select id=f-pred><option value="">any</option></select></label>
<label>search <input id=f-q type=search placeholder="part of the path" size=18></label>
<label>order <select id=f-order><option value=rank>most suspicious first</option>
<option value=rank-desc>least suspicious first</option>
<option value=given>by given label</option></select></label>
<label>per page <select id=f-size><option>50</option><option selected>100</option>
<option>200</option><option>500</option></select></label>
</div>
<div class=pager id=pager-top></div>
"""
