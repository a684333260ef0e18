"""The shared parameter docs (spexlvm/_docs.py): substituted, and every parameter documented."""

from __future__ import annotations

import inspect
import re

import pytest

import spexlvm
from spexlvm import _docs, pl, tl

_PLACEHOLDER = re.compile(r"%\(\w+\)s")
# the templates' own fields, which save_doc / key_added_doc fill in
_TEMPLATE_FIELD = re.compile(r"\{(name|reader)\}")


def _public_functions():
    out = []
    for prefix, module in (("pl", pl), ("tl", tl)):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                out.append((f"{prefix}.{name}", obj))
    out.append(("SpexLVM.train", spexlvm.SpexLVM.train))
    return out


FUNCTIONS = _public_functions()


def documented_parameters(doc: str) -> list[str]:
    """Names in the numpydoc Parameters section (``x, y`` gives both; ``**kwargs`` -> kwargs)."""
    lines = inspect.cleandoc(doc).splitlines()
    try:
        start = next(
            i
            for i in range(len(lines) - 1)
            if lines[i].strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}
        )
    except StopIteration:
        return []
    names = []
    for i in range(start + 2, len(lines)):
        line = lines[i]
        if i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"} and line.strip():
            break  # the next section's header
        if line and not line[0].isspace():
            head = line.split(" : ")[0]
            names += [n.strip().lstrip("*") for n in head.split(",") if n.strip()]
    return names


def undocumented(func) -> list[str]:
    params = [p for p in inspect.signature(func).parameters if p != "self"]
    documented = set(documented_parameters(func.__doc__ or ""))
    return [p for p in params if p not in documented]


def test_the_parser_reads_a_numpydoc_section():
    def f(adata, x, y, *, key="spexlvm", **kwargs):
        """Summary.

        Parameters
        ----------
        adata
            Data.
        x, y
            Axes.
        key : str
            Key.
        **kwargs
            Passed on.

        Returns
        -------
        out
            Not a parameter.
        """

    assert documented_parameters(f.__doc__) == ["adata", "x", "y", "key", "kwargs"]
    assert undocumented(f) == []

    def g(adata, key="spexlvm"):
        """Summary.

        Parameters
        ----------
        adata
            Data.
        """

    assert undocumented(g) == ["key"]


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_every_parameter_is_documented(name, func):
    assert func.__doc__, f"{name} has no docstring"
    missing = undocumented(func)
    assert not missing, f"{name} does not document {missing} in its Parameters section"


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_shared_docs_are_substituted(name, func):
    doc = func.__doc__
    assert not _PLACEHOLDER.search(doc), f"{name}: {_PLACEHOLDER.findall(doc)} not substituted"
    assert not _TEMPLATE_FIELD.search(doc), f"{name}: a template field is left"


def test_a_misspelt_placeholder_is_left_visible():
    # docrep keeps an unknown key (with a SyntaxWarning), so the test above catches it
    def f(adata):
        """Summary.

        Parameters
        ----------
        %(adata_fitt)s
        """

    with pytest.warns(SyntaxWarning, match="adata_fitt"):
        f = _docs.docs.dedent(f)
    assert _PLACEHOLDER.search(f.__doc__)


def _entry(doc: str, name: str) -> str:
    """The text of one parameter's entry (its name line and description), dedented."""
    lines = inspect.cleandoc(doc).splitlines()
    start = lines.index(name)
    end = start + 1
    while end < len(lines) and lines[end].startswith(" "):
        end += 1
    return "\n".join(lines[start:end])


def test_the_shared_texts_are_what_the_functions_show():
    assert _entry(pl.auroc.__doc__, "adata") == _docs.PARAMS["adata_fit"]
    assert _entry(pl.auroc.__doc__, "key") == _docs.PARAMS["key_fit"]
    assert _entry(pl.auroc.__doc__, "ax") == _docs.PARAMS["ax"]
    assert _entry(pl.auroc.__doc__, "show") == _docs.PARAMS["show"]
    assert _entry(pl.auroc.__doc__, "save") == _docs.save_doc("spexlvm_auroc")
    assert "``spexlvm_auroc.{file_format_figs}``" in pl.auroc.__doc__
    assert _entry(tl.auroc.__doc__, "adata") == _docs.PARAMS["adata_fitted"]
    assert _entry(tl.auroc.__doc__, "key") == _docs.PARAMS["key"]
    assert _entry(tl.auroc.__doc__, "key_added") == _docs.key_added_doc("auroc")
    assert ":func:`spexlvm.get.auroc`" in tl.auroc.__doc__
    assert _entry(tl.fit.__doc__, "accelerator") == _docs.PARAMS["accelerator"]
    assert _entry(spexlvm.SpexLVM.train.__doc__, "accelerator") == _docs.PARAMS["accelerator"]
    # the sections around the substituted entries are intact
    assert "Returns\n-------" in inspect.cleandoc(pl.auroc.__doc__)


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_save_names_the_file_the_plot_writes(name, func):
    # the save entry's file name is the default_name the function passes to save_or_show
    source = inspect.getsource(func)
    written = re.findall(r'default_name="(\w+)"', source)
    shown = re.findall(r"``(spexlvm_\w+)\.\{file_format_figs\}``", func.__doc__)
    if not written or not shown:
        return
    assert shown == sorted(set(written)), f"{name}: docs name {shown}, writes {written}"


def test_the_getters_named_by_key_added_exist():
    for name, func in FUNCTIONS:
        for reader in re.findall(r":func:`spexlvm\.get\.(\w+)`", func.__doc__):
            assert hasattr(spexlvm.get, reader), f"{name} names spexlvm.get.{reader}"
