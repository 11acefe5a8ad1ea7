"""Open every page of the built site in headless Chromium, with the network cut.

Usage (what `make site-test` runs):

    .venv/bin/python tools/site_test.py --site _build/html --chromium /usr/bin/chromium

The site is served on 127.0.0.1 by a server this script starts. Every request to any
other host is blocked and counted as a failure. For each page of _toc.yml (plus the
index and the search page):

at 1440 px, light mode
* no failed request (blocked, network error or HTTP status >= 400) and no console error
  or uncaught exception;
* a page with math shows rendered MathJax (``mjx-container`` elements, no TeX errors);
* every ``<img>`` has loaded (``naturalWidth > 0``);
* every saved widget view is rendered by the widget manager and is not empty;
* every link to this site points at a file that exists, and at an id in it;
* exactly one visible search box;
* no element is wider than the text column: an element reaching beyond the column's
  edges is reported (with its section and a CSS path) unless an ancestor clips it or is
  a scroll box the page marks as deliberate (class ``bn-scroll-x``, which
  _assets/book.js gives to code, printed output, display math and tables); a box that
  scrolls sideways without that mark is reported too;
* with every dropdown opened, no code scrolls sideways (lines of up to 88 characters fit
  every code box, solutions' included), and printed output wider than its box shows
  that it scrolls (``bn-overflows``: a thin bar and a shade; counted as "wide outputs");
* no inert control: every slider shown (``<input type=range>``, such as the scrubber of
  a matplotlib ``to_jshtml`` animation, or an ipywidgets slider) is moved and some
  image, canvas or SVG of the page must change (ones that change on their own are left
  out of the comparison);

at 1024 and 390 px
* clicking the visible ☰ button shows the chapter list (a dialog at 390 px; at 1024 px
  it hides the sidebar, and a second click shows it again), and clicking the visible
  contents button, where there is one, shows the page's table of contents;
* exactly one visible search box, nothing wider than the column and no image drawn out
  of its own shape (at 390 px);

and screenshots of the whole page at 1440 and 390 px, light and dark, in
``<screenshots>/{1440,390}-{light,dark}/`` (plus, for chapter 1, the opened chapter list
and page contents: ``menu-390.png``, ``contents-390.png``, ``menu-1024.png``, ...). Then
once: the search page finds "momentum", an exercise solution opens when its toggle is
clicked, and the colour-mode button switches between light and dark on the first click.

Playwright drives Debian's Chromium (``executable_path``); it never downloads a browser.
This is a script, not a pytest module, so ``make test`` never collects it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from browser import LOCAL_HOSTS, OfflineBrowser, serve
from toc import toc_documents

EXTRA_PAGES = ["genindex", "search"]
SHOT_SETS = ["1440-light", "1440-dark", "390-light", "390-dark"]


class PageWatch:
    """Collects what goes wrong while one page is open."""

    def __init__(self):
        self.problems: list[str] = []

    def reset(self):
        self.problems = []

    def on_console(self, msg):
        if msg.type == "error":
            self.problems.append(f"console error: {msg.text}")

    def on_pageerror(self, err):
        self.problems.append(f"uncaught exception: {err}")

    def on_requestfailed(self, request):
        if urlparse(request.url).hostname in LOCAL_HOSTS:
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def on_response(self, response):
        if response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")


JS_IMAGES = """async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => {
    i.loading = 'eager';
    return i.decode().catch(() => null);
  }));
  return {total: imgs.length,
          broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0))
                      .map(i => i.src)};
}"""

# images drawn with another aspect ratio than their own (e.g. a height attribute kept
# while CSS narrows the width on a phone)
JS_DISTORTED = """() => Array.from(document.images)
  .filter(i => i.naturalWidth > 0 && i.clientWidth > 0 && i.clientHeight > 0)
  .filter(i => Math.abs((i.clientWidth / i.clientHeight)
                        / (i.naturalWidth / i.naturalHeight) - 1) > 0.03)
  .map(i => `${i.src.split('/').pop().slice(0, 24)}: drawn ` +
            `${i.clientWidth}x${i.clientHeight} px, ` +
            `its own shape ${i.naturalWidth}x${i.naturalHeight}`)"""

JS_HAS_MATH = """() => document.querySelectorAll(
  'div.math, span.math, .math.notranslate, mjx-container').length"""

JS_MATH = """async () => {
  if (!window.MathJax || !MathJax.startup || !MathJax.startup.promise) return null;
  await MathJax.startup.promise;
  return {containers: document.querySelectorAll('mjx-container').length,
          errors: Array.from(document.querySelectorAll('mjx-merror'))
                    .map(e => e.textContent).slice(0, 5)};
}"""

JS_WIDGET_VIEWS = """() => document.querySelectorAll(
  'script[type="application/vnd.jupyter.widget-view+json"]').length"""

JS_WIDGETS = """() => {
  const areas = Array.from(document.querySelectorAll('.widget-subarea'));
  const filled = areas.filter(
    a => a.querySelector('[class*="widget-"], .jupyter-widgets')
         && a.getBoundingClientRect().height > 0);
  return {areas: areas.length, filled: filled.length,
          widgets: document.querySelectorAll(
            '.widget-subarea [class*="widget-"]').length};
}"""

# Shared helpers, defined once per page as window.__bn.
JS_HELPERS = """() => {
  if (window.__bn) return;
  const visible = el => {
    if (!el) return false;
    const r = el.getBoundingClientRect();
    if (r.width < 1 || r.height < 1) return false;
    if (r.right <= 0 || r.left >= innerWidth) return false;
    for (let x = el; x && x.nodeType === 1; x = x.parentElement) {
      const cs = getComputedStyle(x);
      if (cs.visibility === 'hidden' || cs.display === 'none' || cs.opacity === '0') {
        return false;
      }
    }
    return true;
  };
  const name = el => {
    let s = el.tagName.toLowerCase();
    if (el.id && !/^(id\\d+|_anim)/.test(el.id)) s += '#' + el.id;
    const cls = Array.from(el.classList).filter(c => !c.startsWith('bn-')).slice(0, 2);
    if (cls.length) s += '.' + cls.join('.');
    return s;
  };
  const cssPath = (el, stop) => {
    const parts = [];
    for (let x = el; x && x !== stop && parts.length < 4; x = x.parentElement) {
      parts.unshift(name(x));
    }
    return parts.join(' > ');
  };
  const section = el => {
    const s = el.closest('section[id]');
    return s ? '#' + s.id : '(top)';
  };
  window.__bn = {visible, name, cssPath, section};
}"""

JS_SEARCH_BOXES = """() => Array.from(document.querySelectorAll(
    '.search-button-field, .search-button, form.bd-search, input[type=search]'))
  .filter(el => !el.closest('dialog:not([open])') && __bn.visible(el))
  .filter((el, i, all) => !all.some(o => o !== el && o.contains(el)))
  .map(el => __bn.cssPath(el, document.body))"""

JS_OVERFLOW = """() => {
  const col = document.querySelector('article.bd-article')
              || document.querySelector('.bd-article');
  if (!col) return {column: null, offenders: []};
  const cr = col.getBoundingClientRect();
  const tol = 1;
  const offenders = [], reported = [];
  const report = (el, why) => {
    if (reported.some(r => r.contains(el))) return;
    reported.push(el);
    offenders.push(`${__bn.section(el)}: ${__bn.cssPath(el, col)}: ${why}`);
  };
  for (const el of col.querySelectorAll('*')) {
    if (el.closest('mjx-assistive-mml')) continue;
    const r = el.getBoundingClientRect();
    if (r.width < 1 || r.height < 1) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden' || cs.position === 'fixed') continue;
    const marked = !!el.closest('.bn-scroll-x');
    if ((cs.overflowX === 'auto' || cs.overflowX === 'scroll') && !marked
        && el.scrollWidth > el.clientWidth + tol) {
      report(el, `scrolls sideways (${el.scrollWidth} px of content in `
                 + `${el.clientWidth} px) but is not marked as a scroll box`);
      continue;
    }
    if (r.right <= cr.right + tol && r.left >= cr.left - tol) continue;
    let excused = false;
    for (let a = el.parentElement; a && a !== col; a = a.parentElement) {
      if (a.classList.contains('bn-scroll-x')
          || getComputedStyle(a).overflowX !== 'visible') {
        // clipped, or inside a scroll box (an unmarked one is reported itself)
        excused = true;
        break;
      }
    }
    if (!excused) {
      const beyond = Math.max(r.right - cr.right, cr.left - r.left);
      report(el, `${Math.round(r.width)} px wide, reaches ${Math.round(beyond)} px `
                 + `beyond the ${Math.round(cr.width)} px column`);
    }
  }
  return {column: Math.round(cr.width), offenders};
}"""

# Sideways scrolling inside the column, with every dropdown opened: code (a code cell, a
# code block) must fit its box; printed output wider than its box must show that it
# scrolls (book.js marks it bn-overflows, book.css gives it a bar and a shade).
JS_CODE_FIT = r"""async () => {
  const col = document.querySelector('.bd-article');
  if (!col) return [];
  const closed = Array.from(col.querySelectorAll('details:not([open])'));
  const hidden = Array.from(col.querySelectorAll('.toggle-hidden'));
  closed.forEach(d => { d.open = true; });
  hidden.forEach(el => el.classList.remove('toggle-hidden'));
  window.dispatchEvent(new Event('resize'));
  await new Promise(r => setTimeout(r, 100));
  const found = [];
  for (const pre of col.querySelectorAll('pre')) {
    const box = pre.closest('.bn-scroll-x') || pre;
    const over = Math.max(pre.scrollWidth, box.scrollWidth) - box.clientWidth;
    if (over <= 1 || !box.clientWidth) continue;
    const longest = Math.max(...pre.textContent.split('\n').map(l => l.length));
    const output = !!pre.closest('.cell_output');
    const where = `${__bn.section(pre)}: ${longest}-character line, ${over} px beyond `
                  + `its ${box.clientWidth} px box`;
    if (!output) found.push(`code scrolls sideways: ${where}`);
    else if (!box.classList.contains('bn-overflows')
             && !pre.classList.contains('bn-overflows'))
      found.push(`output scrolls sideways with nothing showing it: ${where}`);
    else found.push(`(wide output, scrolls visibly: ${where})`);
  }
  closed.forEach(d => { d.open = false; });
  hidden.forEach(el => el.classList.add('toggle-hidden'));
  return found;
}"""

# Per-element fingerprints of every image, canvas and SVG in the article.
JS_FIGURE_PRINTS = """() => {
  const hash = s => {
    let h = 2166136261;
    for (let i = 0; i < s.length; i++) {
      h ^= s.charCodeAt(i);
      h = Math.imul(h, 16777619);
    }
    return (h >>> 0).toString(36) + ':' + s.length;
  };
  const root = document.querySelector('.bd-article') || document.body;
  return Array.from(root.querySelectorAll('img, canvas, svg'))
    .filter(e => !e.closest('svg *') && !e.closest('button, .headerlink'))
    .map(e => {
      if (e.tagName === 'IMG') return 'img ' + hash(e.currentSrc || e.src);
      if (e.tagName === 'CANVAS') {
        try {
          return 'canvas ' + hash(e.toDataURL());
        } catch (err) {
          return 'canvas ?';
        }
      }
      return 'svg ' + hash(e.outerHTML);
    });
}"""

JS_CONTROLS = """() => {
  const ranges = Array.from(document.querySelectorAll('.bd-article input[type=range]'));
  const sliders = Array.from(document.querySelectorAll('.bd-article .widget-slider'))
    .filter(s => !s.querySelector('input[type=range]'));
  return [...ranges.map((el, i) => ({kind: 'range', i})),
          ...sliders.map((el, i) => ({kind: 'widget', i}))]
    .map(c => {
      const el = c.kind === 'range' ? ranges[c.i] : sliders[c.i];
      const label = (c.kind === 'widget'
                     ? (el.innerText || '')
                     : (el.getAttribute('aria-label') || el.className || 'range'))
        .trim().replace(/\\s+/g, ' ').slice(0, 40);
      return {...c, label, section: __bn.section(el),
              shown: __bn.visible(el) || el.getClientRects().length > 0};
    });
}"""


def _goto(page, url, timeout_ms):
    response = page.goto(url, wait_until="load", timeout=timeout_ms)
    page.evaluate(JS_HELPERS)
    return response


def _wait_math(page, timeout_ms):
    if not page.evaluate(JS_HAS_MATH):
        return None
    page.wait_for_function(
        "() => window.MathJax && MathJax.startup && MathJax.startup.promise",
        timeout=timeout_ms,
    )
    return page.evaluate(JS_MATH)


def check_links(page, site: Path, base: str, name: str, cache: dict) -> list[str]:
    """Every link to this site resolves to a file, and its #fragment to an id in that
    file."""
    hrefs = page.evaluate(
        "() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"
    )
    problems, seen = [], set()
    for href in hrefs:
        url = urlparse(href)
        if url.scheme not in ("http", "https") or url.hostname not in LOCAL_HOSTS:
            continue
        key = (url.path, url.fragment)
        if key in seen:
            continue
        seen.add(key)
        target = site / unquote(url.path).lstrip("/")
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            problems.append(f"link to a missing file: {url.path}")
            continue
        if url.fragment and target.suffix == ".html":
            if target not in cache:
                cache[target] = set(
                    re.findall(r'\sid="([^"]+)"', target.read_text(errors="replace"))
                )
            if unquote(url.fragment) not in cache[target]:
                problems.append(f"link to a missing anchor: {url.path}#{url.fragment}")
    return problems


def check_controls(page, timeout_ms) -> tuple[list[str], int]:
    """Move every slider of the page; some image, canvas or SVG must change."""
    controls = page.evaluate(JS_CONTROLS)
    problems = []
    for c in controls:
        loc = (
            page.locator(".bd-article input[type=range]").nth(c["i"])
            if c["kind"] == "range"
            else page.locator(".bd-article .widget-slider").nth(c["i"])
        )
        kind = "slider" if c["kind"] == "range" else "ipywidgets slider"
        what = f"{kind} '{c['label']}' in {c['section']}"
        try:
            loc.scroll_into_view_if_needed(timeout=5000)
        except Exception:  # noqa: BLE001
            continue  # not shown (in a collapsed cell, for example)
        # what changes on its own (a playing animation) is not evidence
        p0 = page.evaluate(JS_FIGURE_PRINTS)
        page.wait_for_timeout(700)
        p1 = page.evaluate(JS_FIGURE_PRINTS)
        unstable = {i for i, (a, b) in enumerate(zip(p0, p1)) if a != b}
        try:
            if c["kind"] == "range":
                box = loc.bounding_box()
                value = float(
                    loc.evaluate("e => (e.value - e.min) / ((e.max - e.min) || 1)")
                )
                frac = 0.2 if value > 0.5 else 0.8
                page.mouse.click(
                    box["x"] + box["width"] * frac, box["y"] + box["height"] / 2
                )
            else:
                handle = loc.locator(".noUi-handle").first
                box = handle.bounding_box()
                x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                page.mouse.move(x, y)
                page.mouse.down()
                page.mouse.move(x + 40, y, steps=4)
                page.mouse.up()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"could not move the {what}: {exc}")
            continue
        changed = False
        for _ in range(10):
            page.wait_for_timeout(300)
            p2 = page.evaluate(JS_FIGURE_PRINTS)
            if len(p2) != len(p1) or any(
                a != b for i, (a, b) in enumerate(zip(p1, p2)) if i not in unstable
            ):
                changed = True
                break
        if not changed:
            problems.append(
                f"inert control: moving the {what} changes no image, canvas or SVG"
            )
    return problems, len(controls)


def check_menus(
    page, base, name, width, timeout_ms, shots: Path | None = None
) -> list[str]:
    """The visible ☰ and contents buttons show the chapter list and the page contents
    (with shots: screenshots of both opened, as menu-<width>.png and
    contents-<width>.png)."""
    problems = []
    page.set_viewport_size({"width": width, "height": 900})
    _goto(page, f"{base}/{name}.html", timeout_ms)
    page.wait_for_timeout(300)
    nav_links = (
        "() => Array.from(document.querySelectorAll('.bd-docs-nav a.reference'))"
        ".filter(a => __bn.visible(a)).length"
    )
    toggle = page.locator(".bd-header-article .primary-toggle")
    if toggle.count() == 0 or not toggle.first.is_visible():
        return [f"{width} px: no visible ☰ button"]
    shown_before = page.evaluate(nav_links)
    toggle.first.click()
    page.wait_for_timeout(600)
    shown_after = page.evaluate(nav_links)
    if shots:
        page.screenshot(path=str(shots / f"menu-{width}.png"))
    if width < 992:
        if shown_before:
            problems.append(
                f"{width} px: the chapter list is shown before ☰ is clicked"
            )
        if not shown_after:
            problems.append(f"{width} px: clicking ☰ does not show the chapter list")
        page.keyboard.press("Escape")
        page.wait_for_timeout(400)
        if page.evaluate(nav_links):
            problems.append(f"{width} px: Escape does not close the chapter list")
    else:
        if not shown_before:
            problems.append(f"{width} px: the chapter list is not shown on opening")
        if shown_after:
            problems.append(f"{width} px: clicking ☰ does not hide the chapter list")
        toggle.first.click()
        page.wait_for_timeout(600)
        if not page.evaluate(nav_links):
            problems.append(
                f"{width} px: a second click on ☰ does not show the chapter list again"
            )
    contents = page.locator(".bd-header-article .secondary-toggle")
    if contents.count() and contents.first.is_visible():
        toc_links = (
            "() => Array.from(document.querySelectorAll("
            "'.bd-toc-nav a, nav.page-toc a'))"
            ".filter(a => __bn.visible(a)).length"
        )
        if page.evaluate(toc_links):
            problems.append(
                f"{width} px: the page contents are shown before the contents button "
                "is clicked"
            )
        contents.first.click()
        page.wait_for_timeout(600)
        if shots:
            page.screenshot(path=str(shots / f"contents-{width}.png"))
        if not page.evaluate(toc_links):
            problems.append(
                f"{width} px: clicking the contents button does not show the page "
                "contents"
            )
        page.keyboard.press("Escape")
        page.wait_for_timeout(300)
    return problems


def shoot(page, base, name, width, shots: Path, shot_set: str, timeout_ms):
    page.set_viewport_size({"width": width, "height": 900})
    _goto(page, f"{base}/{name}.html", timeout_ms)
    try:
        _wait_math(page, timeout_ms)
    except Exception:  # noqa: BLE001
        pass
    page.evaluate(JS_IMAGES)
    page.wait_for_timeout(400)
    page.screenshot(
        path=str(shots / shot_set / (name.replace("/", "__") + ".png")), full_page=True
    )


def check_page(page, watch, site, base, name, shots, timeout_ms, link_cache):
    problems = []
    url = f"{base}/{name}.html"
    watch.reset()
    page.set_viewport_size({"width": 1440, "height": 900})
    try:
        response = _goto(page, url, timeout_ms)
    except Exception as exc:  # noqa: BLE001
        return [f"could not open: {exc}"], {}
    if response is None or response.status != 200:
        return [f"HTTP {response.status if response else '?'} for {url}"], {}
    info = {}
    # math
    try:
        math = _wait_math(page, timeout_ms)
    except Exception as exc:  # noqa: BLE001
        math = None
        problems.append(f"MathJax did not start: {exc}")
    if math is not None:
        info["math"] = math["containers"]
        if math["containers"] == 0:
            problems.append("page has math but no rendered mjx-container")
        if math["errors"]:
            problems.append(f"MathJax errors: {math['errors']}")
    # widgets
    views = page.evaluate(JS_WIDGET_VIEWS)
    if views:
        try:
            page.wait_for_function(
                "() => document.querySelectorAll('.widget-subarea').length"
                f" >= {views} && "
                "Array.from(document.querySelectorAll('.widget-subarea'))"
                ".every(a => a.querySelector('[class*=\"widget-\"]'))",
                timeout=timeout_ms,
            )
        except Exception:  # noqa: BLE001
            pass
        w = page.evaluate(JS_WIDGETS)
        info["widget views"] = f"{w['filled']}/{views}"
        if w["filled"] < views:
            problems.append(
                f"widget views rendered: {w['filled']} of {views} "
                f"({w['areas']} widget areas, {w['widgets']} widget elements)"
            )
    # images
    imgs = page.evaluate(JS_IMAGES)
    info["images"] = imgs["total"]
    for src in imgs["broken"]:
        problems.append(f"image not loaded: {src}")
    page.wait_for_timeout(300)  # late console errors, font loads
    page.screenshot(
        path=str(shots / "1440-light" / (name.replace("/", "__") + ".png")),
        full_page=True,
    )
    # links
    problems.extend(check_links(page, site, base, name, link_cache))
    # one search box
    boxes = page.evaluate(JS_SEARCH_BOXES)
    if len(boxes) != 1:
        problems.append(
            f"1440 px: {len(boxes)} visible search boxes, expected 1: {boxes}"
        )
    # nothing wider than the column
    overflow = page.evaluate(JS_OVERFLOW)
    for offender in overflow["offenders"]:
        problems.append(f"1440 px: wider than the column: {offender}")
    wide_outputs = 0
    for found in page.evaluate(JS_CODE_FIT):
        if found.startswith("("):
            wide_outputs += 1
        else:
            problems.append(f"1440 px: {found}")
    if wide_outputs:
        info["wide outputs"] = wide_outputs
    # no inert control
    control_problems, n_controls = check_controls(page, timeout_ms)
    if n_controls:
        info["sliders"] = n_controls
    problems.extend(control_problems)
    problems.extend(watch.problems)
    return problems, info


def check_narrow(page, watch, base, name, shots, timeout_ms):
    """390 px: screenshot, one search box, nothing wider than the column; menus at 390
    and 1024 px."""
    problems = []
    watch.reset()
    shoot(page, base, name, 390, shots, "390-light", timeout_ms)
    boxes = page.evaluate(JS_SEARCH_BOXES)
    if len(boxes) != 1:
        problems.append(
            f"390 px: {len(boxes)} visible search boxes, expected 1: {boxes}"
        )
    for offender in page.evaluate(JS_OVERFLOW)["offenders"]:
        problems.append(f"390 px: wider than the column: {offender}")
    for image in page.evaluate(JS_DISTORTED):
        problems.append(f"390 px: image out of shape: {image}")
    for width in (390, 1024):
        problems.extend(
            check_menus(
                page,
                base,
                name,
                width,
                timeout_ms,
                shots if name.endswith("01_deriving") else None,
            )
        )
    problems.extend(watch.problems)
    return problems


def check_search(page, watch, base, timeout_ms):
    watch.reset()
    page.set_viewport_size({"width": 1440, "height": 900})
    page.goto(f"{base}/search.html?q=momentum", wait_until="load", timeout=timeout_ms)
    try:
        page.wait_for_function(
            "() => document.querySelectorAll('ul.search li').length > 0",
            timeout=timeout_ms,
        )
    except Exception:  # noqa: BLE001
        pass
    hits = page.evaluate(
        "() => Array.from(document.querySelectorAll('ul.search li a'))"
        ".map(a => a.getAttribute('href'))"
    )
    problems = list(watch.problems)
    if not hits:
        problems.append('search for "momentum" returned no results')
    return problems, hits


def check_solution_toggle(page, watch, base, names, shots, timeout_ms):
    page.set_viewport_size({"width": 1440, "height": 900})
    for name in names:
        watch.reset()
        page.goto(f"{base}/{name}.html", wait_until="load", timeout=timeout_ms)
        sol = page.locator("div.solution.dropdown").first
        if sol.count() == 0:
            continue
        button = sol.locator("button.toggle-button").first
        body = sol.locator(":scope > :not(.admonition-title)").first
        if button.count() == 0:
            return [f"{name}: solution has no toggle button"], name
        problems = []
        sol.scroll_into_view_if_needed()
        if body.count() and body.is_visible():
            problems.append(f"{name}: solution is open before its toggle is clicked")
        button.click()
        try:
            body.wait_for(state="visible", timeout=5000)
            page.wait_for_timeout(500)  # the opening animation
            sol.screenshot(path=str(shots / "solution-opened.png"))
        except Exception:  # noqa: BLE001
            problems.append(
                f"{name}: solution did not open when its toggle was clicked"
            )
        problems.extend(watch.problems)
        return problems, name
    return ["no page has an exercise solution with a toggle"], None


def check_mode_button(page, watch, base, name, timeout_ms):
    """The first click on the colour-mode button switches light <-> dark."""
    watch.reset()
    page.set_viewport_size({"width": 1440, "height": 900})
    _goto(page, f"{base}/{name}.html", timeout_ms)
    problems = []
    button = page.locator(".bd-header-article .theme-switch-button").first
    start = page.evaluate("() => document.documentElement.dataset.theme")
    seen = [start]
    for _ in range(2):
        button.click()
        page.wait_for_timeout(200)
        seen.append(page.evaluate("() => document.documentElement.dataset.theme"))
    if seen[1] == seen[0] or seen[2] != seen[0]:
        problems.append(
            f"colour-mode button: {' -> '.join(seen)} (expected light -> dark -> light)"
        )
    problems.extend(watch.problems)
    return problems, seen


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", default="_build/html")
    ap.add_argument("--toc", default="_toc.yml")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshots", default="_build/screenshots")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per page step")
    args = ap.parse_args(argv)

    site = Path(args.site)
    if not (site / "index.html").exists():
        print(f"no built site in {site}: run make book first")
        return 2
    if not Path(args.chromium).exists():
        print(f"Chromium not found at {args.chromium}: apt-get install chromium")
        return 2

    shots = Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):
        old.unlink()
    for shot_set in SHOT_SETS:
        shutil.rmtree(shots / shot_set, ignore_errors=True)
        (shots / shot_set).mkdir()
    names = toc_documents(args.toc) + EXTRA_PAGES
    timeout_ms = args.timeout * 1000
    server, base = serve(site)
    results: dict[str, list[str]] = {}
    link_cache: dict = {}
    start = time.time()

    def report(label, problems, detail=""):
        results[label] = problems
        print(f"{'ok  ' if not problems else 'FAIL'} {label}{detail}", flush=True)
        for prob in problems:
            print(f"       - {prob}")

    watch = PageWatch()

    def on_blocked(url):
        watch.problems.append(f"blocked request outside the site: {url}")

    with OfflineBrowser(args.chromium) as ob:

        def new_page(mode):
            context = ob.new_context(
                on_blocked,
                viewport={"width": 1440, "height": 900},
                color_scheme=mode,
            )
            context.add_init_script(
                f"try {{ localStorage.setItem('mode', '{mode}'); "
                f"localStorage.setItem('theme', '{mode}'); }} catch (e) {{}}"
            )
            page = context.new_page()
            page.on("console", watch.on_console)
            page.on("pageerror", watch.on_pageerror)
            page.on("requestfailed", watch.on_requestfailed)
            page.on("response", watch.on_response)
            return page

        light, dark = new_page("light"), new_page("dark")
        for name in names:
            t0 = time.time()
            problems, info = check_page(
                light, watch, site, base, name, shots, timeout_ms, link_cache
            )
            problems += check_narrow(light, watch, base, name, shots, timeout_ms)
            watch.reset()
            for width in (1440, 390):
                shoot(dark, base, name, width, shots, f"{width}-dark", timeout_ms)
            problems += watch.problems
            detail = ", ".join(f"{k} {v}" for k, v in info.items())
            report(f"page {name}", problems, f"  {time.time() - t0:5.1f} s  {detail}")

        problems, hits = check_search(light, watch, base, timeout_ms)
        report(
            "search finds momentum",
            problems,
            f": {len(hits)} results ({', '.join(h.split('?')[0] for h in hits[:4])}"
            f"{' ...' if len(hits) > 4 else ''})",
        )
        problems, where = check_solution_toggle(
            light, watch, base, names, shots, timeout_ms
        )
        report("exercise solution opens", problems, f" on {where}" if where else "")
        problems, seen = check_mode_button(light, watch, base, names[0], timeout_ms)
        report(
            "colour-mode button toggles light/dark", problems, f": {' -> '.join(seen)}"
        )
    server.shutdown()

    failed = [k for k, v in results.items() if v]
    n_shots = sum(1 for _ in shots.rglob("*.png")) - sum(
        1 for _ in (shots / "lab").glob("*.png")
    )
    print(
        f"\nscreenshots: {shots}/{{{','.join(SHOT_SETS)}}}/ ({n_shots} files); "
        f"requests blocked: {len(ob.blocked)}; {time.time() - start:.0f} s"
    )
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
