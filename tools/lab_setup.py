"""Set up JupyterLab in this environment the way the course expects it (`make lab` runs
this).

    .venv/bin/python tools/lab_setup.py

Everything is written inside the virtual environment (``sys.prefix``), nothing in the
home folder:

* opening a chapter changes nothing in it. When its kernel starts, JupyterLab writes the
  kernel's name and its ``language_info`` (with the Python version) into the notebook's
  metadata and, if they differ from what is saved, marks the unchanged notebook as
  modified. So the ``python3`` kernel is listed as "Python 3", the name saved in the
  chapters, and ``etc/jupyter/jupyter_server_config.py`` hands JupyterLab every Python
  notebook with this environment's ``language_info`` (the chapters record the Python
  that last ran them, which is rarely the reader's); the file changes only when saved;
* ``share/jupyter/lab/settings/overrides.json``: JupyterLab does not ask whether to
  fetch Jupyter news and does not check for updates (no prompt, no request leaves the
  machine when a chapter opens);
* citations read as on the site, "[Ioffe and Szegedy, 2015]". jupyterlab-myst (2.7)
  has no bibliography: it renders every ``{cite}`ioffe2015batch``` as its key, styled
  as an error ("Citation Not Found"), whatever the frontmatter says. A small JupyterLab
  extension written here (``share/jupyter/labextensions/bn-course-citations``: plain
  JavaScript, nothing to build) replaces each key found in ``references.bib`` by its
  author-year label, with the full entry as its tooltip; custom.css (loaded through
  ``LabApp.custom_css``) shows any other key plainly as "[key]" (and every key, where
  references.bib is not beside tools/).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

PREFIX = Path(sys.prefix)
OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}
CUSTOM_CSS = """\
/* Written by tools/lab_setup.py. jupyterlab-myst has no bibliography: a {cite} role
   renders as its key, styled as an error ("Citation Not Found"). The extension
   bn-course-citations puts author-year labels in place of the keys of references.bib
   (class bn-cite); any other key is shown as a plain citation. */
.myst span.bn-cite {
  color: inherit !important;
}
.myst span.bn-cite > svg {
  display: none;
}
.myst .cite-group:has(> .bn-cite)::before,
.myst :not(.cite-group) > span.bn-cite::before {
  content: "[";
}
.myst .cite-group:has(> .bn-cite)::after,
.myst :not(.cite-group) > span.bn-cite::after {
  content: "]";
}
.myst .cite-group > .bn-cite + .bn-cite::before {
  content: "; ";
}
.myst .cite-group > span.bn-cite::after {
  content: none !important; /* jupyterlab-myst's own ", " between a group's keys */
}
.myst span[title="Citation Not Found"] {
  color: inherit !important;
}
.myst span[title="Citation Not Found"] > svg {
  display: none;
}
.myst span[title="Citation Not Found"]::before {
  content: "[";
}
.myst span[title="Citation Not Found"]::after {
  content: "]";
}
"""
LAB_CONFIG = {"LabApp": {"custom_css": True}}
BIB = Path(__file__).resolve().parents[1] / "references.bib"
CITATIONS = "bn-course-citations"
CITATIONS_JS = """\
// Written by tools/lab_setup.py: jupyterlab-myst shows a citation as its key (it has
// no bibliography); show the author-year label of references.bib, as the site does.
(function () {
  var REFS = __REFS__;
  function label(root) {
    var sel = '.myst .cite-group > span, .myst [title="Citation Not Found"]';
    root.querySelectorAll(sel).forEach(function (el) {
        var key = el.textContent.trim();
        var ref = REFS[key];
        if (!ref) return;
        for (var n = el.firstChild; n; n = n.nextSibling) {
          if (n.nodeType === 3 && n.nodeValue.trim() === key) n.nodeValue = ref[0];
        }
        el.title = ref[1];
        el.classList.add("bn-cite");
      });
  }
  function start() {
    var queued = false;
    new MutationObserver(function () {
      if (queued) return;
      queued = true;
      requestAnimationFrame(function () { queued = false; label(document.body); });
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
    label(document.body);
  }
  var plugin = {id: "bn-course-citations:plugin", autoStart: true, activate: start};
  window._JUPYTERLAB = window._JUPYTERLAB || {};
  window._JUPYTERLAB["bn-course-citations"] = {
    init: function () { return Promise.resolve(); },
    get: function () {
      var module = {__esModule: true, default: [plugin]};
      return Promise.resolve(function () { return module; });
    },
  };
})();
"""
ACCENTS = {
    "'": "\u0301",
    '"': "\u0308",
    "`": "\u0300",
    "^": "\u0302",
    "~": "\u0303",
    "=": "\u0304",
    ".": "\u0307",
    "c": "\u0327",
    "u": "\u0306",
    "v": "\u030c",
}


def _plain(tex: str) -> str:
    """A BibTeX name or title as text: accents composed, braces dropped."""
    tex = re.sub(
        r"\\([cuv'\"`^~=.])\s*\{?\s*(\w)\}?",
        lambda m: m.group(2) + ACCENTS[m.group(1)],
        tex,
    )
    for macro, char in (("L", "Ł"), ("l", "ł"), ("o", "ø"), ("O", "Ø"), ("ss", "ß")):
        tex = re.sub(r"\\" + macro + r"\b\s*", char, tex)
    return unicodedata.normalize("NFC", re.sub(r"[{}]", "", tex)).strip()


def _field(body: str, name: str) -> str:
    """The value of field ``name`` of an entry's body (braces balanced), or ''."""
    m = re.search(r"\b" + name + r"\s*=\s*", body, re.I)
    if not m:
        return ""
    rest, depth = body[m.end() :], 0
    if rest[:1] != "{":
        return re.match(r"[^,}]*", rest).group(0).strip().strip('"')
    for i, ch in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth == 0:
            return rest[1:i]
    return ""


def _last_name(name: str) -> str:
    name = name.strip()
    if name.startswith("{") and name.endswith("}"):
        return _plain(name)  # a group, "{PyTorch contributors}"
    depth, comma = 0, -1
    for i, ch in enumerate(name):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            comma = i
            break
    return _plain(name[:comma] if comma >= 0 else name.split()[-1])


def citation_labels(bib: str) -> dict[str, list[str]]:
    """key -> [author-year label, full entry] for every entry of a BibTeX text, labelled
    as the site labels them (_ext/bibstyle.py): "A, 2015", "A and B, 2015",
    "A et al., 2015", with a, b, ... when two labels collide (in order of title)."""
    entries = []
    for m in re.finditer(r"@\w+\s*\{\s*([^,\s]+)\s*,", bib):
        body = bib[m.end() : bib.find("\n@", m.end()) % (len(bib) + 1)]
        people = re.split(
            r"\s+and\s+", _field(body, "author") or _field(body, "editor")
        )
        people = [_last_name(p) for p in people if p.strip()]
        title, year = (
            _plain(_field(body, "title")),
            _plain(_field(body, "year")) or "n.d.",
        )
        if not people:
            who = title[:20]
        elif len(people) <= 2:
            who = " and ".join(people)
        else:
            who = f"{people[0]} et al."
        entries.append((f"{who}, {year}", title, m.group(1)))
    counts, seen, labels = Counter(e[0] for e in entries), Counter(), {}
    for label, title, key in sorted(entries):
        if counts[label] > 1:
            seen[label] += 1
            label += "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
        labels[key] = [label, f"{label}. {title}."]
    return labels


def write_citations(ext_dir: Path) -> int:
    """The citation extension in ``ext_dir``; returns the number of entries it knows."""
    refs = citation_labels(BIB.read_text(encoding="utf-8")) if BIB.exists() else {}
    package = {
        "name": CITATIONS,
        "version": "1.0.0",
        "description": "Author-year citations from references.bib (tools/lab_setup.py)",
        "jupyterlab": {"_build": {"load": "static/remoteEntry.js", "extension": "./x"}},
    }
    write(ext_dir / "package.json", json.dumps(package, indent=2) + "\n")
    js = CITATIONS_JS.replace("__REFS__", json.dumps(refs, ensure_ascii=False))
    write(ext_dir / "static" / "remoteEntry.js", js)
    return len(refs)


SERVER_CONFIG = """\
# Written by tools/lab_setup.py. A notebook records the Python that last ran it
# (metadata.language_info); a kernel reports its own when it starts, and JupyterLab
# marks the notebook modified when the two differ. Notebooks are handed to JupyterLab
# with the language_info of this environment's kernel, so opening one changes nothing;
# the file on disk changes only when it is saved.
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager


class CourseContentsManager(AsyncLargeFileManager):
    async def get(self, path, content=True, type=None, format=None, **kwargs):
        model = await super().get(path, content, type, format, **kwargs)
        if model.get("type") == "notebook" and model.get("content"):
            meta = model["content"].get("metadata", {})
            if meta.get("language_info", {}).get("name") == "python":
                from ipykernel.ipkernel import IPythonKernel

                meta["language_info"] = dict(IPythonKernel.language_info)
        return model


c.ServerApp.contents_manager_class = CourseContentsManager  # noqa: F821
"""


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def main() -> int:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ipykernel",
            "install",
            "--sys-prefix",
            "--name",
            "python3",
            "--display-name",
            "Python 3",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    write(
        PREFIX / "share/jupyter/lab/settings/overrides.json",
        json.dumps(OVERRIDES, indent=2) + "\n",
    )
    # Jupyter Server looks for custom/custom.css in the user's config folder first, then
    # in its own static folder, which lives in this environment.
    import jupyter_server

    static_custom = Path(os.path.dirname(jupyter_server.__file__)) / "static" / "custom"
    write(static_custom / "custom.css", CUSTOM_CSS)
    write(
        PREFIX / "etc/jupyter/jupyter_lab_config.json",
        json.dumps(LAB_CONFIG, indent=2) + "\n",
    )
    write(PREFIX / "etc/jupyter/jupyter_server_config.py", SERVER_CONFIG)
    n_refs = write_citations(PREFIX / "share/jupyter/labextensions" / CITATIONS)
    cites = (
        f"author-year citations ({n_refs} entries of {BIB.name})"
        if n_refs
        else f"citations as [key] (no {BIB})"
    )
    print(
        f"JupyterLab set up in {PREFIX}: kernel 'Python 3', notebooks open unmodified, "
        f"no news prompt, {cites}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
