"""Self-contained HTML pages for token inspection and match explanations.

A page needs no network: the style sheet is inline and images are embedded
as base64 ``data:`` URIs. Tokens are drawn as chips whose size and colour
grow with their weight; in an explanation, the tokens a query and a document
share are highlighted and labelled with their contribution to the score.

* :func:`render_tokens_page` — the top tokens of one input, with its image.
* :func:`render_explanation_page` — an :class:`~lsr.explain.Explanation`.
* :func:`write_page` — write either to a file.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .errors import InputError
from .vocab import Vocabulary

_CSS = """
* { box-sizing: border-box; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; margin: 24px; color: #1f2933;
       background: #f7f8fa; }
h1 { font-size: 22px; margin: 0 0 4px 0; }
h2 { font-size: 16px; margin: 0 0 10px 0; color: #334e68; }
.sub { color: #627d98; font-size: 13px; margin-bottom: 16px; }
.row { display: flex; gap: 20px; align-items: flex-start; flex-wrap: wrap; }
.panel { background: #fff; border: 1px solid #d9e2ec; border-radius: 8px; padding: 14px 16px; margin-bottom: 16px;
         flex: 1 1 420px; min-width: 320px; }
.media { flex: 0 0 auto; }
.media img { display: block; box-sizing: content-box; border-radius: 6px; border: 1px solid #d9e2ec; max-width: none; }
.text { font-size: 14px; line-height: 1.45; margin: 0 0 10px 0; white-space: pre-wrap; }
.chips { line-height: 2.1; }
.chip { display: inline-block; margin: 2px 3px; padding: 1px 8px; border-radius: 12px; color: #102a43;
        border: 1px solid #9fb3c8; white-space: nowrap; vertical-align: middle; }
.chip small { font-size: 10px; color: #486581; margin-left: 5px; }
.chip.match { border: 2px solid #c2410c; color: #431407; }
.chip.match b { font-size: 10px; background: #c2410c; color: #fff; border-radius: 8px; padding: 0 5px;
                margin-left: 5px; }
.legend { font-size: 13px; color: #334e68; display: flex; gap: 22px; flex-wrap: wrap; align-items: center; }
.swatch { display: inline-block; padding: 1px 8px; border-radius: 12px; color: #102a43; border: 1px solid #9fb3c8;
          background: rgba(37,99,235,0.33); margin-right: 6px; }
.swatch.match { border: 2px solid #c2410c; color: #431407; background: rgba(249,115,22,0.45); }
.swatch.match b { font-size: 10px; background: #c2410c; color: #fff; border-radius: 8px; padding: 0 5px;
                  margin-left: 5px; }
.scores { display: flex; gap: 28px; font-size: 14px; }
.scores div b { display: block; font-size: 22px; }
.ok { color: #15803d; } .bad { color: #b91c1c; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { text-align: right; padding: 3px 8px; border-bottom: 1px solid #e4e7eb; }
th:first-child, td:first-child { text-align: left; }
td.bar { width: 40%; text-align: left; }
td.bar span { display: inline-block; height: 10px; background: #f97316; border-radius: 3px; }
.muted { color: #829ab1; font-size: 12px; }
"""


def image_data_uri(image: Any, max_side: int = 384) -> tuple[str, int, int]:
    """A ``data:image/png;base64,...`` URI of ``image`` (path, PIL image or tensor) and its width and height.

    The image is shrunk (aspect kept) so its longer side is at most ``max_side`` pixels.
    """
    from .inputs import load_image

    if max_side < 1:
        raise InputError(f"max_side must be positive, got {max_side}")
    im = load_image(image)
    if max(im.size) > max_side:
        im = im.copy()
        im.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), im.width, im.height


def _fmt(w: float) -> str:
    return str(int(w)) if float(w).is_integer() else f"{w:.2f}"


def _pairs(tokens: Iterable) -> list[tuple[str, float]]:
    out = []
    for item in tokens:
        try:
            tok, w = item
        except (TypeError, ValueError):
            raise InputError(f"expected (token, weight) pairs, got {item!r}") from None
        out.append((str(tok), float(w)))
    return out


def token_chips(tokens: Iterable, highlight: Mapping[str, int] | None = None) -> str:
    """HTML chips for ``(token, weight)`` pairs; chips of tokens in ``highlight`` show that number."""
    pairs = _pairs(tokens)
    if not pairs:
        return '<p class="muted">no tokens</p>'
    top = max(w for _, w in pairs) or 1.0
    highlight = highlight or {}
    out = []
    for tok, w in pairs:
        r = max(0.0, min(1.0, w / top))
        size = 0.8 + 1.2 * r
        attrs = f'data-token="{html.escape(tok)}" data-weight="{_fmt(w)}"'
        if tok in highlight:
            style = f"font-size:{size:.2f}em;background:rgba(249,115,22,{0.15 + 0.6 * r:.2f})"
            badge = f'<b title="contribution to the score">+{highlight[tok]}</b>'
            cls = "chip match"
        else:
            style = f"font-size:{size:.2f}em;background:rgba(37,99,235,{0.08 + 0.5 * r:.2f})"
            badge = ""
            cls = "chip"
        out.append(f'<span class="{cls}" {attrs} style="{style}" title="{html.escape(tok)}: {_fmt(w)}">'
                   f"{html.escape(Vocabulary.display(tok))}<small>{_fmt(w)}</small>{badge}</span>")
    return '<div class="chips">' + "".join(out) + "</div>"


def _media(image: Any, alt: str) -> str:
    if image is None:
        return ""
    uri, w, h = image_data_uri(image)
    return (f'<div class="media"><img src="{uri}" width="{w}" height="{h}" style="width:{w}px;height:{h}px" '
            f'alt="{html.escape(alt)}"></div>')


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def render_tokens_page(
    tokens: Sequence, *, title: str = "Token inspection", text: str | None = None, image: Any = None,
    subtitle: str | None = None,
) -> str:
    """A page showing ``(token, weight)`` pairs as chips, beside the input's image and text."""
    pairs = _pairs(tokens)
    info = subtitle if subtitle is not None else f"{len(pairs)} tokens, largest weight first"
    body = [f"<h1>{html.escape(title)}</h1>", f'<div class="sub">{html.escape(info)}</div>', '<div class="row">',
            _media(image, "input image")]
    panel = ['<div class="panel" id="tokens">']
    if text:
        panel.append(f'<p class="text">{html.escape(text)}</p>')
    panel.append(token_chips(pairs))
    panel.append("</div>")
    body += panel + ["</div>"]
    return _page(title, "\n".join(body))


#: The key to the two chip colours of an explanation page.
LEGEND = ('<div class="panel legend" id="legend"><span><span class="swatch match" data-legend="shared">token'
          '<b>+contribution</b></span>orange: a token the query and the document share, labelled with what it '
          'adds to the score (query impact × document impact)</span>'
          '<span><span class="swatch" data-legend="one-side">token</span>blue: a token of one side only '
          '(adds nothing)</span><span class="muted">larger and darker chips: larger weights</span></div>')


def render_explanation_page(explanation, top_k: int = 40, title: str | None = None) -> str:
    """A page explaining one match: scores side by side, both vectors with their overlap, and the table.

    Each side shows its ``top_k`` largest tokens plus every shared token.
    """
    from .explain import decode

    e = explanation
    shared = {c.token: c.contribution for c in e.contributions}

    def side(vector: Mapping[str, int]) -> list:
        top = decode(vector, top_k)
        seen = {t.token for t in top}
        extra = [t for t in decode({k: vector[k] for k in shared if k in vector}, None) if t.token not in seen]
        return top + extra

    title = title or f"Why document {e.docid} matched"
    ok = e.matches_lucene
    rank = f"rank {e.rank}" if e.rank else "not in Lucene's results"
    body = [f"<h1>{html.escape(title)}</h1>",
            f'<div class="sub">{len(e.contributions)} shared tokens · query {len(e.query)} tokens · '
            f"document {len(e.document)} tokens · {html.escape(rank)}</div>",
            '<div class="panel" id="scores"><div class="scores">',
            f'<div>Lucene score<b id="lucene-score">{e.lucene_score}</b></div>',
            f'<div>Sum of contributions<b id="sum">{e.sum_of_contributions}</b></div>',
            f'<div>Agreement<b class="{"ok" if ok else "bad"}">{"equal" if ok else "different"}</b></div>',
            f'<div>Float score<b>{e.score:.4f}</b></div>',
            "</div></div>",
            LEGEND,
            '<div class="row">', _media(e.query_image, "query image"),
            '<div class="panel" id="query"><h2>Query</h2>']
    if e.query_text:
        body.append(f'<p class="text">{html.escape(e.query_text)}</p>')
    body += [token_chips(side(e.query), shared), "</div>",
             '<div class="panel" id="document">', f"<h2>Document {html.escape(e.docid)}</h2>"]
    if e.doc_text:
        body.append(f'<p class="text">{html.escape(e.doc_text)}</p>')
    body += [token_chips(side(e.document), shared), "</div></div>"]
    total = e.sum_of_contributions or 1
    rows = ["<tr><th>token</th><th>query</th><th>document</th><th>contribution</th><th>share</th><th></th></tr>"]
    for c in e.contributions:
        share = c.contribution / total
        rows.append(f'<tr data-token="{html.escape(c.token)}"><td>{html.escape(c.display)}</td><td>{c.query_weight}'
                    f"</td><td>{c.doc_weight}</td><td>{c.contribution}</td><td>{100 * share:.1f}%</td>"
                    f'<td class="bar"><span style="width:{max(1.0, 100 * share):.1f}%"></span></td></tr>')
    rows.append(f"<tr><th>total</th><th></th><th></th><th>{e.sum_of_contributions}</th><th>100%</th><th></th></tr>")
    body += ['<div class="panel" id="contributions"><h2>Contributions (query impact × document impact)</h2>',
             "<table>" + "".join(rows) + "</table></div>"]
    return _page(title, "\n".join(body))


def write_page(path: str | os.PathLike, page: str) -> Path:
    """Write ``page`` to ``path`` (UTF-8), creating parent directories."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot write the HTML page ({e.strerror})") from None
    return path
