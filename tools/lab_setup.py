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
* citations: jupyterlab-myst (2.7) renders MyST exercises, solutions and proofs, but
  has no bibliography, so it shows every ``{cite}`ioffe2015batch``` as its key in
  warning colours with an icon. A small custom.css (loaded through
  ``LabApp.custom_css``) shows the key as a plain bracketed citation instead,
  "[ioffe2015batch]"; the full entries are on the book's bibliography page.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
   renders as its key, styled as an error ("Citation Not Found"). Show the key as a
   plain citation. */
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
    print(
        f"JupyterLab set up in {PREFIX}: kernel 'Python 3', notebooks open unmodified, "
        "no news prompt, plain citations"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
