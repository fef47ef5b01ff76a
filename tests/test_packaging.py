"""What a packager and a type checker see: SPDX licence with its text, py.typed, one version, used dependencies."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import temflow

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# distribution name -> the module temflow imports
_IMPORT_NAMES = {"scikit-image": "skimage", "pillow": "PIL"}


def test_licence_is_an_spdx_expression_with_its_text():
    assert PROJECT["license"] == "BSD-3-Clause"  # the table form is deprecated (PEP 639)
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # PEP 639 forbids both
    text = (ROOT / PROJECT["license-files"][0]).read_text()
    assert text.startswith("BSD 3-Clause License")
    assert "Neither the name of the copyright holder" in text and "AS IS" in text


def test_the_package_is_typed_and_classified():
    assert (Path(temflow.__file__).parent / "py.typed").exists()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["temflow"]
    classifiers = PROJECT["classifiers"]
    assert "Typing :: Typed" in classifiers
    assert any(c.startswith("Topic :: Scientific/Engineering") for c in classifiers)
    python = [c.rsplit(":: ", 1)[1] for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert python and min(python, key=lambda v: int(v.split(".")[1])) == PROJECT["requires-python"].removeprefix(">=")


def test_the_version_is_written_in_one_place():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "temflow._version.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", temflow.__version__)
    hits = [p for p in (ROOT / "src").rglob("*.py") if re.search(r"^__version__\s*=", p.read_text(), re.M)]
    assert [p.name for p in hits] == ["_version.py"]


def test_every_dependency_is_imported_by_temflow():
    # a required package nobody imports (dask-image was one) costs every user an install for nothing
    source = "\n".join(p.read_text() for p in (ROOT / "src" / "temflow").rglob("*.py"))
    for requirement in PROJECT["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        module = _IMPORT_NAMES.get(name, name.replace("-", "_"))
        assert re.search(rf"^\s*(import|from) {re.escape(module)}(\.|\s|$)", source, re.M), f"{name} is never imported"
