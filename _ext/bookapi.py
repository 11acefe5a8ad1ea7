"""Sphinx helpers for the API reference page (api.md), loaded from _config.yml.

bnlib's docstrings are valid reST as written (a shape with a star, such as
``(N, C, *spatial)``, or a norm such as ``||w||``, is a literal); -W fails the build
otherwise. Before napoleon converts a docstring:

* a "Returns:" section listing several ``name: description`` entries is renamed
  "Return values:", so that napoleon lists them like "Args:";
* attribute, data and property docstrings are kept as written (napoleon would read
  "text: more text" as "type: description");
* a reference to a name re-exported at the top level (``bnlib.fit``, or a bare ``fit``
  that is not found elsewhere) resolves to where it is documented (``bnlib.train.fit``).
"""

from __future__ import annotations

import importlib
import re

import sphinx
from sphinx.errors import ExtensionError
from sphinx.ext.napoleon import docstring as napoleon_docstring

_NAMED_ENTRY = re.compile(r"^\s*[A-Za-z_][\w]*(\s*,\s*[A-Za-z_][\w]*)*\s*:(\s|$)")


def _name_several_returns(lines):
    """A "Returns:" section that lists two or more ``name: description`` entries is
    renamed "Return values:", which napoleon formats like "Args:" (one item per
    name)."""
    for idx, line in enumerate(lines):
        if line.strip() != "Returns:":
            continue
        head_indent = len(line) - len(line.lstrip())
        entries, entry_indent = [], None
        for body in lines[idx + 1 :]:
            if not body.strip():
                continue
            indent = len(body) - len(body.lstrip())
            if indent <= head_indent:
                break
            if entry_indent is None:
                entry_indent = indent
            if indent == entry_indent:
                entries.append(body)
        if len(entries) >= 2 and all(_NAMED_ENTRY.match(e) for e in entries):
            lines[idx] = line.replace("Returns:", "Return values:")


def _name_returns(app, what, name, obj, options, lines):
    _name_several_returns(lines)


def _keep_attribute_docstring(self):
    return list(self._consume_to_end())


def _resolve_reexport(app, env, node, contnode):
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    candidates = [target] if target.startswith("bnlib.") else ["bnlib." + target]
    for dotted in candidates:
        obj = _lookup(dotted)
        if obj is None:
            continue
        module = getattr(obj, "__module__", None)
        qualname = getattr(obj, "__qualname__", None)
        if not module or not qualname or not module.startswith("bnlib"):
            continue
        canonical = f"{module}.{qualname}"
        if canonical == target:
            continue
        domain = env.get_domain("py")
        found = domain.resolve_xref(
            env, node["refdoc"], app.builder, node["reftype"], canonical, node, contnode
        )
        if found is not None:
            return found
    return None


def _lookup(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


def _patch_attribute_docstring():
    """Make napoleon keep attribute docstrings as written. The patched method is
    private: if this Sphinx's napoleon lacks it, fail the build rather than set an
    attribute nothing calls (the docstrings would silently be misread again)."""
    cls = napoleon_docstring.GoogleDocstring
    missing = [
        name
        for name in ("_parse_attribute_docstring", "_consume_to_end")
        if not callable(getattr(cls, name, None))
    ]
    if missing:
        names = ", ".join(f"{cls.__module__}.{cls.__qualname__}.{m}" for m in missing)
        raise ExtensionError(
            f"_ext/bookapi.py patches napoleon through {names}, which the installed "
            f"Sphinx {sphinx.__version__} (sphinx.ext.napoleon) does not have; it was "
            "written against Sphinx 7.4 (pinned in requirements.txt). Install that "
            "version, or adapt _keep_attribute_docstring to this napoleon."
        )
    cls._parse_attribute_docstring = _keep_attribute_docstring


def setup(app):
    _patch_attribute_docstring()
    # priority 400: before napoleon converts the docstring
    app.connect("autodoc-process-docstring", _name_returns, priority=400)
    app.connect("missing-reference", _resolve_reexport)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
