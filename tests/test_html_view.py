"""The self-contained HTML views, checked as markup and as rendered by headless Chromium."""

import base64
import io
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from lsr import InputError
from lsr.explain import explain_vectors
from lsr.html_view import image_data_uri, render_explanation_page, render_tokens_page, token_chips, write_page

# A hand-made token list for the astronaut photograph (no image encoder needed).
ASTRONAUT_TOKENS = [("astronaut", 2.41), ("space", 2.02), ("nasa", 1.77), ("##suit", 1.30), ("flag", 0.95),
                    ("woman", 0.81), ("helmet", 0.52), ("shuttle", 0.33)]
WINDOW = (1200, 900)


def astronaut():
    from skimage import data

    return Image.fromarray(data.astronaut())


class Chips(HTMLParser):
    """Collects the chips (token, classes, badge text) and images of a page."""

    def __init__(self):
        super().__init__()
        self.chips, self.images, self._badge, self.ids = [], [], False, {}
        self._id = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "chip" in a.get("class", "").split():
            self.chips.append({"token": a["data-token"], "weight": a["data-weight"], "class": a["class"], "badge": ""})
        if tag == "img":
            self.images.append(a)
        if tag == "b" and a.get("title", "").startswith("contribution"):
            self._badge = True
        if "id" in a:
            self._id = a["id"]

    def handle_data(self, data):
        if self._badge:
            self.chips[-1]["badge"] += data
        if self._id:
            self.ids[self._id] = self.ids.get(self._id, "") + data

    def handle_endtag(self, tag):
        self._badge = False
        self._id = None


def parse(page: str) -> Chips:
    p = Chips()
    p.feed(page)
    return p


def assert_self_contained(page: str):
    """No resource is fetched from anywhere: every src/href is a data: URI, no CSS url(), no scripts."""
    assert not re.findall(r'\b(?:src|href)="(?!data:)', page)
    assert "url(" not in page and "@import" not in page and "<script" not in page.lower()


# ------------------------------------------------------------------ markup
def test_tokens_page_markup_with_image():
    page = render_tokens_page(ASTRONAUT_TOKENS, title="Astronaut", text="a photograph", image=astronaut())
    assert_self_contained(page)
    p = parse(page)
    assert [c["token"] for c in p.chips] == [t for t, _ in ASTRONAUT_TOKENS]
    assert "\u2026suit" in page  # the word piece is shown as a continuation
    (img,) = p.images
    assert img["src"].startswith("data:image/png;base64,") and (img["width"], img["height"]) == ("384", "384")
    decoded = Image.open(io.BytesIO(base64.b64decode(img["src"].split(",", 1)[1])))
    assert decoded.size == (384, 384)
    # font size grows with the weight
    sizes = [float(m) for m in re.findall(r'style="font-size:([\d.]+)em', page)]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] == pytest.approx(2.0)


def test_chips_escape_tokens_and_reject_bad_pairs():
    html = token_chips([("<script>", 1.0), ('a"b', 0.5)])
    assert "<script>" not in html and "&lt;script&gt;" in html and 'data-token="a&quot;b"' in html
    assert "no tokens" in token_chips([])
    with pytest.raises(InputError, match="pairs"):
        token_chips(["lonely"])
    with pytest.raises(InputError, match="not found"):
        image_data_uri("/no/such/image.png")


def test_explanation_page_highlights_overlap():
    e = explain_vectors({"wing": 120, "flutter": 90, "speed": 40}, {"flutter": 150, "wing": 30, "panel": 80},
                        "d7", lucene_score=17100, scale=100.0, rank=2, query_text="wing flutter speed",
                        doc_text="panel flutter of a wing")
    page = render_explanation_page(e)
    assert_self_contained(page)
    p = parse(page)
    matches = {(c["token"], c["badge"]) for c in p.chips if "match" in c["class"].split()}
    assert matches == {("flutter", "+13500"), ("wing", "+3600")}  # once on each side
    assert sum("match" in c["class"] for c in p.chips) == 4
    assert p.ids["lucene-score"] == "17100" and p.ids["sum"] == "17100"
    assert ">equal<" in page
    assert_legend(page)


def assert_legend(page: str):
    """The legend names both chip colours, with swatches styled like the chips they explain."""
    legend = re.search(r'<div class="panel legend" id="legend">(.*?)</div>', page, re.S)
    assert legend, "the explanation page has no legend"
    swatches = re.findall(r'<span class="(swatch[^"]*)" data-legend="([^"]+)">', legend.group(1))
    assert swatches == [("swatch match", "shared"), ("swatch", "one-side")]
    text = re.sub(r"<[^>]+>", " ", legend.group(1))
    assert "orange" in text and "share" in text and "score" in text and "blue" in text and "one side" in text
    # the swatches use the chips' colours: orange highlight of a match, blue of a plain chip
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert "rgba(249,115,22" in re.search(r"\.swatch\.match \{[^}]*\}", css).group(0)
    assert "rgba(37,99,235" in re.search(r"\.swatch \{[^}]*\}", css).group(0)


# ------------------------------------------------------------- headless Chromium
def chromium() -> str:
    exe = os.environ.get("LSR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.fail("headless Chromium is needed to check the HTML views; install Debian's package "
                    "(apt-get install -y chromium) or set LSR_CHROMIUM to the browser's path")
    return exe


def run_chromium(tmp_path, page_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--hide-scrollbars", f"--window-size={WINDOW[0]},{WINDOW[1]}",
           *args, page_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc


def find_patch(screen: np.ndarray, patch: np.ndarray, tol: float = 3.0) -> tuple[int, int] | None:
    """Top-left corner where ``patch`` appears in ``screen`` (mean absolute difference below ``tol``)."""
    h, w = patch.shape[:2]
    cy, cx = h // 2, w // 2
    probe = patch[cy, cx:cx + 16].astype(int)
    candidates = np.abs(screen.astype(int) - probe[0]).sum(-1) <= 9
    for y, x in zip(*np.nonzero(candidates)):
        y0, x0 = y - cy, x - cx
        if y0 < 0 or x0 < 0 or y0 + h > screen.shape[0] or x0 + w > screen.shape[1]:
            continue
        if np.abs(screen[y, x:x + 16].astype(int) - probe).mean() > tol:
            continue
        if np.abs(screen[y0:y0 + h, x0:x0 + w].astype(int) - patch.astype(int)).mean() < tol:
            return int(y0), int(x0)
    return None


@pytest.mark.slow
def test_chromium_renders_tokens_beside_the_image(tmp_path):
    page = write_page(tmp_path / "astronaut.html",
                      render_tokens_page(ASTRONAUT_TOKENS, title="Tokens of the astronaut photograph",
                                         text="skimage.data.astronaut()", image=astronaut()))
    dom = parse(run_chromium(tmp_path, page, "--dump-dom").stdout)
    assert [c["token"] for c in dom.chips] == [t for t, _ in ASTRONAUT_TOKENS]
    assert [c["weight"] for c in dom.chips] == [f"{w:.2f}" for _, w in ASTRONAUT_TOKENS]
    assert len(dom.images) == 1 and dom.images[0]["src"].startswith("data:image/png;base64,")

    png = tmp_path / "astronaut.png"
    run_chromium(tmp_path, page, f"--screenshot={png}")
    assert png.is_file(), "chromium wrote no screenshot"
    shot = np.asarray(Image.open(png).convert("RGB"))
    assert shot.shape[:2] == (WINDOW[1], WINDOW[0])
    assert shot.std() > 20, "the screenshot is blank"
    # the photograph itself is on screen, pixel for pixel, at the size the page gives it
    uri = dom.images[0]["src"].split(",", 1)[1]
    photo = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("RGB"))
    where = find_patch(shot, photo)
    assert where is not None, "the image is not visible in the screenshot"
    y, x = where
    # the chips are drawn to the right of the image: the region there is not plain background
    right = shot[y:y + photo.shape[0], x + photo.shape[1] + 30:]
    assert right.std() > 10 and (right.reshape(-1, 3).std(0) > 5).any()


@pytest.mark.slow
def test_chromium_renders_an_explanation(tmp_path):
    e = explain_vectors({"wing": 120, "flutter": 90, "speed": 40, "##ing": 10},
                        {"flutter": 150, "wing": 30, "panel": 80, "##ing": 7}, "d7", lucene_score=17170,
                        scale=100.0, rank=2, query_text="wing flutter speed", doc_text="panel flutter of a wing")
    page = write_page(tmp_path / "why.html", render_explanation_page(e))
    rendered = run_chromium(tmp_path, page, "--dump-dom").stdout
    dom = parse(rendered)
    assert dom.ids["lucene-score"] == "17170" and dom.ids["sum"] == "17170"
    assert_legend(rendered)  # the legend is in the DOM Chromium built
    badges = sorted((c["token"], c["badge"]) for c in dom.chips if "match" in c["class"].split())
    assert badges == sorted([("flutter", "+13500"), ("wing", "+3600"), ("##ing", "+70")] * 2)
    png = tmp_path / "why.png"
    run_chromium(tmp_path, page, f"--screenshot={png}")
    shot = np.asarray(Image.open(png).convert("RGB"))
    assert shot.shape[:2] == (WINDOW[1], WINDOW[0]) and shot.std() > 20
    # the highlight colour of shared tokens (orange) is on screen
    r, g, b = (shot[..., i].astype(int) for i in range(3))
    assert ((r - b > 80) & (r > 180)).sum() > 500
