"""Every code example in README.md and docs/ runs, and every TOML example is a valid run file."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

import matplotlib
import pytest

from temflow.pipeline.config import Config

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def _blocks(page: Path, language: str) -> list[str]:
    return [code for lang, code in _BLOCK.findall(page.read_text()) if lang == language]


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p, "python")], ids=lambda p: p.name)
def test_python_examples_run(page, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for number, code in enumerate(_blocks(page, "python")):
        try:
            exec(compile(code, f"{page.name}[{number}]", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message says which block
            raise AssertionError(f"{page.name}, python block {number} failed: {exc!r}") from exc


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p, "toml")], ids=lambda p: p.name)
def test_toml_examples_are_valid_run_files(page, tmp_path):
    for code in _blocks(page, "toml"):
        data = tomllib.loads(code)
        data.setdefault("input", {"synthetic": {}})
        # paths in examples are illustrations: check the keys and types, not the files
        data.get("segmentation", {}).pop("model", None)
        data.get("insitu", {}).pop("holder_log", None)
        for key in ("tls_ca_file", "tls_cert", "tls_key"):
            data.get("cluster", {}).pop(key, None)
        Config.from_dict(data, source=f"{page.name} example")


def test_docs_name_no_package_registry():
    for page in PAGES:
        text = page.read_text().lower()
        assert "index-url" not in text and "pypi.org" not in text, page.name
    assert os.path.exists(ROOT / "docs" / "index.md")


def test_the_site_builds_with_an_api_reference_from_the_docstrings(tmp_path):
    import subprocess
    import sys

    pytest.importorskip("mkdocstrings")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    for name in ("open_movie", "estimate_drift", "predict", "link", "fit_growth_law", "run"):
        assert name in api, name


def _yaml_documents(page: Path) -> list[dict]:
    import yaml

    heredocs = re.findall(r"<<'YAML'\n(.*?)^YAML$", page.read_text(), re.S | re.M)
    return [yaml.safe_load(text) for text in heredocs]


def test_the_kubernetes_manifest_is_a_valid_dask_cluster_with_current_commands():
    from distributed.cli.dask_scheduler import main as scheduler_cli
    from distributed.cli.dask_worker import main as worker_cli

    page = ROOT / "docs" / "scaling.md"
    assert "dask-worker" not in page.read_text() and "dask-scheduler" not in page.read_text()
    (manifest,) = _yaml_documents(page)
    assert manifest["apiVersion"] == "kubernetes.dask.org/v1" and manifest["kind"] == "DaskCluster"
    name = manifest["metadata"]["name"]
    worker, scheduler = manifest["spec"]["worker"], manifest["spec"]["scheduler"]
    assert isinstance(worker["replicas"], int) and worker["replicas"] > 0
    commands = {"worker": worker_cli, "scheduler": scheduler_cli}
    for role, spec in (("worker", worker["spec"]), ("scheduler", scheduler["spec"])):
        (container,) = spec["containers"]
        assert container["name"] and container["image"]
        args = [str(a) for a in container["args"]]
        assert args[:2] == ["dask", role], args  # `dask worker`, not the removed dask-worker executable
        known = {opt for param in commands[role].params for opt in param.opts}
        assert {a for a in args if a.startswith("--")} <= known, sorted({a for a in args if a.startswith("--")} - known)
        volumes = {v["name"] for v in spec.get("volumes", [])}
        assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        dashboard = args[args.index("--dashboard-address") + 1]
        assert int(dashboard.rsplit(":", 1)[-1]) == ports["http-dashboard"]
        if role == "scheduler":
            assert int(args[args.index("--port") + 1]) == ports["tcp-comm"]
            assert container["readinessProbe"]["httpGet"]["port"] in ports
            scheduler_ports = ports
    service = scheduler["service"]
    assert service["type"] == "ClusterIP"  # reached by port-forward, never exposed
    assert service["selector"] == {"dask.org/cluster-name": name, "dask.org/component": "scheduler"}
    by_port = {p["port"]: p["targetPort"] for p in service["ports"]}
    assert set(by_port) == {8786, 8787}
    assert all(target in scheduler_ports for target in by_port.values())
    assert scheduler_ports[by_port[8787]] == 8787 and scheduler_ports[by_port[8786]] == 8786
