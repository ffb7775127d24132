"""A real, non-editable install: the wheel puts everything under ``promptlake.`` and nothing at
the top level of site-packages, and the installed ``promptlake`` command ingests offline."""

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from promptlake.sample_data import sample_image
from tests.helpers import ROOT

GENERIC = ("tasks", "storage", "flows", "deployments")


def _run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _wheel(out: Path) -> Path:
    """Build from a copy of the checkout: an in-place build leaves ``build/`` behind, whose stale
    files a later wheel would carry."""
    src = out / "src"
    skip = shutil.ignore_patterns(".git", ".venv*", "build", "demo", "data", "*.egg-info")
    shutil.copytree(ROOT, src, ignore=skip)
    build = ["wheel", "--no-deps", "--no-build-isolation", "-q"]
    _run([sys.executable, "-m", "pip", *build, "-w", str(out), str(src)], cwd=out)
    (wheel,) = out.glob("promptlake-*.whl")
    return wheel


def _fresh_venv(where: Path) -> Path:
    """A new virtualenv whose own site-packages is empty; the dependencies (torch and friends,
    gigabytes) are borrowed from this interpreter's site-packages through a ``.pth`` line, which
    adds the folder but runs none of its ``.pth`` files, so the editable promptlake stays out."""
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    own = Path(site.stdout.strip())
    (own / "borrowed-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return own


def test_wheel_installs_under_promptlake_only_and_ingests(tmp_path, tiny_clip):
    wheel = _wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"promptlake"}, tops
    assert "promptlake/deployments/prefect.yaml" in names
    page = ("templates/index.html", "static/app.js", "static/app.css")
    assert {f"promptlake/ui/{f}" for f in page} <= set(names)  # the search page's assets
    assert {f"promptlake/{g}/__init__.py" for g in GENERIC} <= set(names)
    # every sub-package ships (pyproject.toml lists them: a new one left out would not)
    packages = {
        f"promptlake/{init.relative_to(ROOT).as_posix()}"
        for g in GENERIC
        for init in (ROOT / g).rglob("__init__.py")
    }
    assert packages <= set(names), packages - set(names)

    env_dir = tmp_path / "venv"
    site = _fresh_venv(env_dir)
    pip = [sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python")]
    _run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)])
    installed = {p.name for p in site.iterdir()}
    assert not installed & set(GENERIC), installed
    assert not [n for n in installed if n.startswith("__editable__")]

    work = tmp_path / "work"  # not the repository: its folders must not be importable
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PREFECT_API_URL")} | {
        "PREFECT_HOME": str(tmp_path / "ph"),
        "PROMPTLAKE_DEVICE": "cpu",
    }
    py = str(env_dir / "bin" / "python")
    where = _run([py, "-c", _PROBE], cwd=work, env=env).stdout.split()
    assert where[0].startswith(str(site)), where  # the installed copy, not the checkout
    assert where[1:] == ["None"] * len(GENERIC), where

    cli = str(env_dir / "bin" / "promptlake")
    assert "ingest" in _run([cli, "--help"], cwd=work, env=env).stdout
    rows = []
    for i in range(6):
        img = work / f"i{i}.png"
        sample_image(f"prompt {i}").save(img)
        rows.append([f"r{i}", f"prompt {i}, oil painting", img.as_uri(), 64, 64, "local"])
    with open(work / "p.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["id", "prompt", "url", "width", "height", "source_site"], *rows])
    argv = [cli, "ingest", "p.csv", "--data-dir", "d", "--allow-file-urls", "--model", tiny_clip]
    _run([*argv, "--runner", "thread"], cwd=work, env=env, timeout=240)
    out = _run([cli, "status", "--data-dir", "d"], cwd=work, env=env).stdout
    assert "store holds 6 prompts, 6 images" in out, out
    demo = [py, "-m", "promptlake.demo", "--dir", "demo", "-n", "30", "--model", tiny_clip]
    shown = _run(demo, cwd=work, env=env, timeout=600).stdout  # the installed copy's demo
    assert "WHAT IS A STAND-IN" in shown and "exact prompt (from the image's a1111" in shown, shown


_PROBE = """
import importlib.util, promptlake.tasks
print(promptlake.tasks.__file__)
for name in ("tasks", "storage", "flows", "deployments"):
    print(importlib.util.find_spec(name))
"""
