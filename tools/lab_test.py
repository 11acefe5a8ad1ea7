"""Open every chapter in JupyterLab, in headless Chromium, and run the chapters with
live widgets.

Usage (what `make lab-test` runs, after `tools/lab_setup.py` has set up .venv):

    .venv/bin/python tools/lab_test.py --toc _toc.yml --chromium /usr/bin/chromium

The script starts JupyterLab from the environment it runs in, on 127.0.0.1 at a free
port with a random token, over a *copy* of chapters/ in a temporary folder (the chapters
on disk are never touched, whatever JupyterLab saves), with its own settings and
workspace folders. Settings: the notebook renders every cell (no windowing), autosave is
off. The server is stopped at the end, whatever happens.

For every chapter of _toc.yml (a notebook in chapters/):

* every markdown cell is rendered (by jupyterlab-myst) and its text, read with every
  dropdown opened, shows no raw MyST (``:label:``, ``:class:``, a fence, ``{cite``,
  a directive jupyterlab-myst does not know, ...; they are counted per chapter), no
  document link it cannot follow (``{doc}``), and no MyST error mark;
* every citation reads author-year, "[Ioffe and Szegedy, 2015]", as on the site
  (jupyterlab-myst has no bibliography; the extension that tools/lab_setup.py writes
  labels the keys of references.bib): none is left as its key, and a group reads
  "[A, 2015; B et al., 2018]", with the brackets and separators as drawn;
* every solution starts collapsed: a ``{solution}`` is a closed ``<details>``; for a
  gated solution (``{solution-start}`` ... ``{solution-end}``), the cells between (code,
  and prose in cells of their own) have their input and outputs hidden, so that the
  answer is not on screen;
* the notebook is not marked modified after opening (the kernel has started and is
  idle), even though every copy records another Python in ``language_info`` (as a
  chapter last run elsewhere does for a reader: JupyterLab writes the kernel's
  ``language_info`` into the notebook when the kernel starts);
* no news prompt and no other dialog.

Then each chapter of RUN_CHAPTERS: Run > Run All Cells; every code cell must have
run; then the first ipywidgets slider in the notebook is dragged and the figure of its
cell (an image, canvas or SVG in that cell's output) must change.

Screenshots go to --screenshots (one per chapter at its top, one at its first solution,
and each run chapter before and after its slider moved). Playwright drives Debian's
Chromium (``executable_path``); it never downloads a browser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import OfflineBrowser  # noqa: E402
from toc import toc_documents  # noqa: E402

# chapters run top to bottom, then their first slider moved: every chapter has a live
# widget
RUN_CHAPTERS = [
    "01_deriving",
    "02_gamma_beta",
    "03_test_time",
    "04_why_it_works",
    "05_bn_vs_ln",
]
# MyST that jupyterlab-myst left as text: directive options, fences, roles, directives
# it does not know (it shows "name - Unknown Directive"), substitutions
RAW_MYST = re.compile(
    r":(?:label|class|name|hidden|nonumber|width|align|caption|header-rows):"
    r"|```|:::|\{(?:cite|exercise|solution|prf|proof|numref|ref|doc|eq|math|figure|note|"
    r"admonition|margin|code-cell|glue|dropdown|tab-set|tab-item|toggle|only)[:}\-]"
    r"|Unknown (?:Directive|Role)|\{\{"
)
AUTHOR_YEAR = re.compile(r"^\S.*, (\d{4}[a-z]?|n\.d\.)$")
_LABEL = r"[^\s;\[\]][^;\[\]]*, (?:\d{4}[a-z]?|n\.d\.)"
#: a group of citations as it reads: "[A, 2015; B et al., 2018]"
CITE_GROUP = re.compile(rf"^\[{_LABEL}(?:; {_LABEL})*\]$")
SOLUTION_START = re.compile(r"(```|:::)\{solution-start\}")
SOLUTION_END = re.compile(r"(```|:::)\{solution-end\}")
USER_SETTINGS = {
    # every cell in the DOM (the default draws only what is near the viewport)
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
        "windowingMode": "none"
    },
    # nothing is written back, even to the copy
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server of our own; `stop()` ends it and its kernels."""

    def __init__(self, notebooks: Path, workdir: Path):
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        settings = workdir / "user-settings"
        for name, value in USER_SETTINGS.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        self.log_path = workdir / "server.log"
        jupyter = Path(sys.executable).parent / "jupyter"
        cmd = [
            str(jupyter),
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={notebooks}",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={workdir / 'workspaces'}",
        ]
        if hasattr(os, "getuid") and os.getuid() == 0:
            cmd.append("--allow-root")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        }
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            cmd,
            cwd=notebooks,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(
            f"{self.base}{path}",
            method=method,
            headers={"Authorization": f"token {self.token}"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            return r.status, (
                json.loads(body) if body and path.startswith("/api") else body
            )

    def wait_ready(self, timeout: float = 90) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited ({self.proc.returncode}); see {self.log_path}"
                )
            try:
                if self.api("/api/status")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(
            f"JupyterLab did not answer within {timeout:.0f} s; see {self.log_path}"
        )

    def shutdown_kernels(self) -> None:
        try:
            for kernel in self.api("/api/kernels")[1]:
                self.api(f"/api/kernels/{kernel['id']}", method="DELETE")
        except OSError:
            pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.shutdown_kernels()
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self.log.close()


JS_STATE = r"""() => {
  const cells = Array.from(document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell'));
  const shown = el => !!el && el.getClientRects().length > 0
                      && getComputedStyle(el).display !== 'none';
  return cells.map((c, i) => {
    const md = c.classList.contains('jp-MarkdownCell');
    // jupyterlab-myst renders into a '.myst' widget; JupyterLab's own renderer (if the
    // extension is not active) into '.jp-MarkdownOutput'
    const myst = md ? c.querySelector('.jp-InputArea > .myst') : null;
    const rendered = md ? (myst || c.querySelector('.jp-MarkdownOutput')) : null;
    const input = c.querySelector('.jp-Cell-inputWrapper .jp-InputArea');
    const outputs = c.querySelector('.jp-Cell-outputWrapper .jp-OutputArea');
    const prompt = c.querySelector('.jp-InputPrompt');
    return {
      i, type: md ? 'markdown' : (c.classList.contains('jp-CodeCell') ? 'code' : 'raw'),
      rendered: md ? c.classList.contains('jp-mod-rendered') : null,
      myst: !!myst,
      // the text as a reader sees it with every dropdown opened (then closed again)
      text: rendered ? (() => {
        const ds = Array.from(rendered.querySelectorAll('details'));
        const was = ds.map(d => d.open);
        ds.forEach(d => { d.open = true; });
        const text = rendered.innerText;
        ds.forEach((d, k) => { d.open = was[k]; });
        return text;
      })() : '',
      // {doc} links: jupyterlab-myst shows a bare target as its path ("/bibliography")
      // and links a file name without its extension (a 404)
      badLinks: rendered ? Array.from(rendered.querySelectorAll('a[href]'))
        .filter(a => {
          const path = new URL(a.href, location.href).pathname;
          const last = path.split('/').pop();
          return /^\//.test(a.innerText.trim())
                 || /^\/[^.]*$/.test(a.getAttribute('href'))
                 || (path.includes('/files/') && last && !last.includes('.'));
        })
        .map(a => a.innerText.trim() + ' -> ' + a.getAttribute('href').split('?')[0])
        : [],
      mystErrors: rendered ? Array.from(rendered.querySelectorAll('[title]'))
        .filter(e => /not found|unknown|error/i.test(e.title)
                     && e.title !== 'Citation Not Found')
        .map(e => e.title + ': ' + e.innerText.slice(0, 60)) : [],
      // citations: author-year labels (tools/lab_setup.py), or keys left as they are
      cites: rendered ? Array.from(rendered.querySelectorAll('.bn-cite'))
        .map(e => e.innerText.trim()) : [],
      // each group as it reads, with the brackets and separators CSS draws around it
      citeGroups: rendered ? Array.from(rendered.querySelectorAll('.cite-group'))
        .filter(g => g.querySelector('.bn-cite'))
        .map(g => {
          const drawn = (e, p) => {
            const c = getComputedStyle(e, p).content;
            return /^".*"$/.test(c) ? JSON.parse(c) : '';
          };
          const keys = Array.from(g.children).map(
            c => drawn(c, '::before') + c.innerText.trim() + drawn(c, '::after'));
          return drawn(g, '::before') + keys.join('') + drawn(g, '::after');
        }) : [],
      citeKeys: rendered ? Array.from(
          rendered.querySelectorAll('[title="Citation Not Found"]'))
        .map(e => e.innerText.trim()) : [],
      details: rendered ? Array.from(rendered.querySelectorAll('details'))
        .map(d => ({open: d.open,
                    summary: (d.querySelector('summary') || {}).innerText || ''})) : [],
      inputShown: shown(input),
      outputsShown: !!outputs && shown(outputs) && outputs.children.length > 0,
      hasOutputs: !!outputs && outputs.children.length > 0,
      prompt: prompt ? prompt.innerText.trim() : '',
    };
  });
}"""

JS_UI = """() => ({
  dirty: Array.from(document.querySelectorAll('.lm-TabBar-tab.jp-mod-dirty'))
    .map(t => t.innerText.trim()),
  toasts: Array.from(document.querySelectorAll('.Toastify__toast'))
    .map(t => t.innerText.trim().slice(0, 160)),
  dialogs: Array.from(document.querySelectorAll('.jp-Dialog'))
    .map(d => d.innerText.trim().slice(0, 160)),
  kernel: (document.querySelector(
             '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator')
           || {dataset: {}}).dataset.status
        || (document.querySelector(
              '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelStatus')
            || {title: ''}).title,
})"""

JS_FIGURES = """(cellIndex) => {
  const cell = document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell')[cellIndex];
  const area = cell.querySelector('.jp-Cell-outputWrapper') || cell;
  return [
    ...Array.from(area.querySelectorAll('img')).map(i => i.src),
    ...Array.from(area.querySelectorAll('canvas')).map(c => {
      try { return c.toDataURL(); } catch (e) { return ''; }
    }),
    ...Array.from(area.querySelectorAll('svg'))
        .filter(s => !s.closest('button, .jp-Toolbar, .jp-icon'))
        .map(s => s.outerHTML),
  ];
}"""


def gated_solution_cells(nb_path: Path) -> set[int]:
    """Indices of the cells strictly inside {solution-start} ... {solution-end}: code,
    and prose in cells of its own (the start cell's own text is in its dropdown)."""
    cells = json.loads(nb_path.read_text())["cells"]
    inside, found = False, set()
    for i, cell in enumerate(cells):
        src = "".join(cell["source"])
        start, end = SOLUTION_START.search(src), SOLUTION_END.search(src)
        if cell["cell_type"] == "markdown" and (start or end):
            inside = bool(start) and not end
        elif inside and cell["cell_type"] in ("code", "markdown"):
            found.add(i)
    return found


def as_if_run_elsewhere(folder: Path) -> None:
    """Record another Python version in every notebook of ``folder`` (a copy)."""
    for path in folder.glob("*.ipynb"):
        nb = json.loads(path.read_text())
        info = nb["metadata"].setdefault("language_info", {"name": "python"})
        info["version"] = "3.0.0"
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def open_notebook(page, lab: Lab, name: str, workspace: str, timeout_ms: float):
    page.goto(
        f"{lab.base}/lab/workspaces/{workspace}/tree/{name}?reset&token={lab.token}",
        wait_until="domcontentloaded",
        timeout=timeout_ms,
    )
    page.wait_for_selector(
        ".jp-NotebookPanel .jp-Notebook .jp-Cell", timeout=timeout_ms
    )
    # the kernel has started (it updates the notebook's metadata) and is idle
    t0 = time.time()
    while time.time() - t0 < timeout_ms / 1000:
        if page.evaluate(JS_UI)["kernel"] in ("idle", "Kernel Idle"):
            break
        page.wait_for_timeout(500)
    # jupyterlab-myst renders each markdown cell (after JupyterLab's first rendering)
    t0 = time.time()
    while time.time() - t0 < timeout_ms / 1000:
        if page.evaluate("""() => {
              const md = document.querySelectorAll(
                '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-MarkdownCell');
              return md.length > 0 &&
                Array.from(md).every(c => c.querySelector('.jp-InputArea > .myst'));
            }"""):
            break
        page.wait_for_timeout(500)
    page.wait_for_timeout(3000)  # late metadata updates, toasts


def check_chapter(page, lab: Lab, nb_path: Path, shots: Path, timeout_ms: float):
    problems, info = [], {}
    name = nb_path.name
    open_notebook(page, lab, name, f"t-{nb_path.stem}", timeout_ms)
    cells = page.evaluate(JS_STATE)
    ui = page.evaluate(JS_UI)
    md = [c for c in cells if c["type"] == "markdown"]
    info["markdown cells"] = len(md)
    raw = []
    for c in md:
        if not c["rendered"]:
            problems.append(f"cell {c['i']}: markdown not rendered")
            continue
        if not c["myst"] and c["inputShown"]:  # a hidden cell renders when opened
            problems.append(f"cell {c['i']}: not rendered by jupyterlab-myst")
        for m in RAW_MYST.finditer(c["text"]):
            raw.append(m.group(0))
            s = max(0, m.start() - 40)
            snippet = c["text"][s : m.end() + 40].replace("\n", " ")
            problems.append(f"cell {c['i']}: raw MyST {m.group(0)!r} in '{snippet}'")
        for link in c["badLinks"]:
            raw.append("{doc}")
            problems.append(
                f"cell {c['i']}: document link JupyterLab cannot follow: {link} "
                "(write a Markdown link: [chapter 4](04_why_it_works.ipynb))"
            )
        for err in c["mystErrors"]:
            problems.append(f"cell {c['i']}: MyST error mark: {err}")
    info["raw MyST"] = (
        f"{len(raw)} ("
        + ", ".join(f"{k} x{v}" for k, v in Counter(raw).most_common())
        + ")"
        if raw
        else "0"
    )
    cites = [x for c in md for x in c["cites"]]
    keys = [x for c in md for x in c["citeKeys"]]
    info["citations"] = f"{len(cites)} author-year" + (
        f", {len(keys)} shown as keys" if keys else ""
    )
    for label in cites:
        if not AUTHOR_YEAR.match(label):
            problems.append(f"citation label not author-year: {label!r}")
    for group in (g for c in md for g in c["citeGroups"]):
        if not CITE_GROUP.match(group):
            problems.append(f"citation group reads {group}, not [A, 2015; B, 2018]")
    if keys:
        problems.append(
            f"{len(keys)} citations shown as their keys (not in references.bib, or "
            f"tools/lab_setup.py has not run): {sorted(set(keys))[:8]}"
        )
    solutions = [
        (c["i"], d) for c in md for d in c["details"] if "olution" in d["summary"]
    ]
    info["solutions"] = len(solutions)
    for i, d in solutions:
        if d["open"]:
            problems.append(
                f"cell {i}: solution '{d['summary'][:40]}' is open on opening"
            )
    gated = gated_solution_cells(nb_path)
    for c in cells:
        if c["i"] in gated:
            if c["inputShown"]:
                what = "code" if c["type"] == "code" else "text"
                problems.append(
                    f"cell {c['i']}: {what} of a solution ({{solution-start}} ... "
                    "{solution-end}) is shown: hide its input (jupyter.source_hidden)"
                )
            if c["outputsShown"]:
                problems.append(
                    f"cell {c['i']}: output of a solution is shown: hide it "
                    "(jupyter.outputs_hidden)"
                )
    if ui["dirty"]:
        problems.append(
            f"notebook marked modified right after opening: {ui['dirty']} "
            "(kernel name or language_info differ from the saved ones? run "
            "tools/lab_setup.py)"
        )
    if any("news" in t.lower() for t in ui["toasts"]):
        problems.append(f"news prompt shown: {ui['toasts']}")
    if ui["dialogs"]:
        problems.append(f"dialog open: {ui['dialogs']}")
    page.screenshot(path=str(shots / f"{nb_path.stem}.png"))
    first = page.locator(".jp-MarkdownCell details").first
    if first.count():
        first.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / f"{nb_path.stem}-solution.png"))
    return problems, info


def wait_run_all(page, timeout_s: float):
    """Wait until no cell is queued or running; returns the cell states."""
    t0 = time.time()
    page.wait_for_timeout(2000)
    while time.time() - t0 < timeout_s:
        cells = page.evaluate(JS_STATE)
        busy = [c for c in cells if c["type"] == "code" and "*" in c["prompt"]]
        if not busy and page.evaluate(JS_UI)["kernel"] in ("idle", "Kernel Idle"):
            return cells, time.time() - t0
        page.wait_for_timeout(1000)
    return page.evaluate(JS_STATE), None


def run_chapter(page, lab: Lab, nb_path: Path, shots: Path, timeout_ms: float):
    problems, info = [], {}
    open_notebook(page, lab, nb_path.name, f"run-{nb_path.stem}", timeout_ms)
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    cells, took = wait_run_all(page, 300)
    if took is None:
        return ["Run All did not finish within 300 s"], info
    info["Run All"] = f"{took:.0f} s"
    code = [c for c in cells if c["type"] == "code"]
    # a collapsed input (a solution's code) shows no prompt; an error there would
    # still stop Run All, and the visible cells after it would show as not run
    not_run = [
        c["i"]
        for c in code
        if c["inputShown"] and not re.search(r"\[\d+\]", c["prompt"])
    ]
    if not_run:
        # execution stops at the first unexpected error; show it
        errors = page.evaluate("""() => Array.from(document.querySelectorAll(
            '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output' +
            '[data-mime-type="application/vnd.jupyter.stderr"]'))
            .map(e => e.innerText.trim().split('\\n')
                       .filter(l => /Error|Exception/.test(l)).slice(-1)[0] || '')
            .filter(Boolean)""")
        more = " ..." if len(not_run) > 8 else ""
        problems.append(
            f"Run All stopped: code cells {not_run[:8]}{more} "
            f"did not run; last error: {errors[-1] if errors else '?'}"
        )
    sliders = page.locator(
        ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .widget-slider"
    )
    shown = sliders.filter(visible=True)
    info["sliders"] = (
        sliders.count()
        if shown.count() == sliders.count()
        else f"{shown.count()} shown of {sliders.count()}"
    )
    if shown.count() == 0:
        problems.append(
            "no ipywidgets slider shown in the notebook after Run All"
            + (" (all are in collapsed outputs)" if sliders.count() else "")
        )
        page.screenshot(path=str(shots / f"{nb_path.stem}-run-all.png"))
        return problems, info
    slider = shown.first
    slider.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    cell_index = slider.evaluate("""el => Array.from(document.querySelectorAll(
        '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell'))
        .indexOf(el.closest('.jp-Cell'))""")
    label = slider.inner_text().strip().replace("\n", " ")
    before = page.evaluate(JS_FIGURES, cell_index)
    info["slider"] = f"'{label}' in cell {cell_index}"
    if not before:
        problems.append(
            f"cell {cell_index} with the slider shows no image, canvas or SVG"
        )
    page.screenshot(path=str(shots / f"{nb_path.stem}-slider-before.png"))
    handle = slider.locator(".noUi-handle").first
    box = handle.bounding_box() if handle.count() else None
    if box is None:
        return problems + ["the slider has no draggable handle"], info
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 30, y, steps=5)
    page.mouse.move(x + 60, y, steps=5)
    page.mouse.up()
    changed = False
    t0 = time.time()
    while time.time() - t0 < 30:
        page.wait_for_timeout(500)
        after = page.evaluate(JS_FIGURES, cell_index)
        if after and after != before:
            changed = True
            break
    new_label = slider.inner_text().strip().replace("\n", " ")
    info["slider"] += f" -> '{new_label}'"
    page.screenshot(path=str(shots / f"{nb_path.stem}-slider-after.png"))
    if new_label == label:
        problems.append(f"dragging the slider did not change its value ({label})")
    if not changed:
        problems.append(
            "moving the slider did not change the figure of its cell within 30 s"
        )
    return problems, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--toc", default="_toc.yml")
    ap.add_argument("--chapters", default="chapters")
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    ap.add_argument("--screenshots", default="_build/screenshots/lab")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds per page step")
    args = ap.parse_args(argv)

    if not Path(args.chromium).exists():
        print(f"Chromium not found at {args.chromium}: apt-get install chromium")
        return 2

    chapters_dir = Path(args.chapters)
    names = [
        Path(p).name
        for p in toc_documents(args.toc)
        if Path(p).parent.name == chapters_dir.name
        and (chapters_dir / f"{Path(p).name}.ipynb").exists()
    ]
    shots = Path(args.screenshots)
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):
        old.unlink()
    timeout_ms = args.timeout * 1000
    results: dict[str, list[str]] = {}
    blocked: list[str] = []
    start = time.time()

    # a SIGTERM (a CI timeout, say) ends the script through the finally below
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="bn-lab-test-"))
    copy = workdir / "chapters"
    shutil.copytree(
        chapters_dir,
        copy,
        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"),
    )
    as_if_run_elsewhere(copy)
    lab = Lab(copy, workdir)
    try:
        lab.wait_ready()
        print(
            f"JupyterLab on {lab.base} over a copy of {chapters_dir}/ "
            f"({time.time() - start:.0f} s to start)"
        )
        try:
            css = lab.api("/custom/custom.css")[1].decode()
            served = "citation styles" if "bn-cite" in css else "other content"
            print(f"     custom.css served ({served})")
        except OSError:
            print(
                "     no custom.css (citations keep jupyterlab-myst's warning style): "
                "run tools/lab_setup.py"
            )

        with OfflineBrowser(args.chromium) as ob:
            context = ob.new_context(viewport={"width": 1440, "height": 900})
            for name in names:
                page = context.new_page()
                t0 = time.time()
                try:
                    problems, info = check_chapter(
                        page, lab, copy / f"{name}.ipynb", shots, timeout_ms
                    )
                except Exception as exc:  # noqa: BLE001
                    problems, info = [f"could not check: {exc}"], {}
                results[f"lab {name}"] = problems
                detail = ", ".join(f"{k} {v}" for k, v in info.items())
                print(
                    f"{'ok  ' if not problems else 'FAIL'} {name:<22} "
                    f"{time.time() - t0:5.1f} s  {detail}",
                    flush=True,
                )
                for prob in problems:
                    print(f"       - {prob}")
                page.close()
                lab.shutdown_kernels()

            for run in RUN_CHAPTERS:
                if run not in names:
                    results[f"run {run}"] = [f"{run} is not in {args.toc}"]
                    print(f"FAIL run {run}: not in {args.toc}")
                    continue
                page = context.new_page()
                t0 = time.time()
                try:
                    problems, info = run_chapter(
                        page, lab, copy / f"{run}.ipynb", shots, timeout_ms
                    )
                except Exception as exc:  # noqa: BLE001
                    problems, info = [f"could not run: {exc}"], {}
                results[f"run {run}"] = problems
                detail = ", ".join(f"{k} {v}" for k, v in info.items())
                print(
                    f"{'ok  ' if not problems else 'FAIL'} run {run}, "
                    f"move its slider {time.time() - t0:5.1f} s  {detail}",
                    flush=True,
                )
                for prob in problems:
                    print(f"       - {prob}")
                page.close()
                lab.shutdown_kernels()
        blocked += ob.blocked
    except Exception as exc:  # noqa: BLE001
        results["JupyterLab"] = [str(exc)]
        print(f"FAIL JupyterLab: {exc}")
    finally:
        lab.stop()
        log_tail = (
            lab.log_path.read_text().splitlines()[-5:] if lab.log_path.exists() else []
        )
        shutil.rmtree(workdir, ignore_errors=True)

    failed = [k for k, v in results.items() if v]
    if "JupyterLab" in results:
        print("server log (last lines):\n  " + "\n  ".join(log_tail))
    print(
        f"\nscreenshots: {shots}/ ({len(list(shots.glob('*.png')))} files); "
        f"requests outside 127.0.0.1 blocked: {len(blocked)}; server stopped; "
        f"{time.time() - start:.0f} s"
    )
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
