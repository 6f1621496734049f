"""Test-session wiring for tests/ and notebooks/ together: markers, and lessons run once.

Markers (see README's Testing section):
- `lessons`: executes a lesson notebook (nbval's cells, the grading tests). The fast loop
  for contributors is `pytest -m "not lessons"`.
- `parity`: compares against an outside reference where CPU kernels and thread counts
  change the rounding (model vs transformers, cache vs full forward, tiled vs SDPA,
  tensor-parallel vs one process, checkpoint round trips, lessons 05-09). The kernel
  matrix (`python tests/kernel_matrix.py`) runs this subset under every
  ATEN_CPU_CAPABILITY and thread count.
- `browser`: JupyterLab in headless Chromium (tests/browser, run with --browser).

nbval executes every lesson, the instructor sources in notebooks/ and notebooks/zh/ and the
learner's edition in notebooks/learner/ (the untouched student version), and keeps each
cell's outputs on its item. They are recorded here, so that the grading tests score those
same runs (`executed_lessons`) instead of executing each lesson again; the grading tests are moved
after the notebooks.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent

PARITY_NOTEBOOKS = {"05_attention", "06_kv_cache", "07_gqa", "08_flash_attention", "09_llama"}
PARITY_MODULES = {"test_attention.py", "test_model.py", "test_interop.py", "test_flash.py",
                  "test_parallel.py", "test_generate.py", "test_checkpoint.py"}
AFTER_NOTEBOOKS = {"test_lessons_graded.py"}  # they reuse nbval's run of each lesson
# The Chinese learner's edition is not executed: its code is the English learner's edition's
# (tests/test_i18n.py holds them equal), which nbval runs; the Chinese lessons themselves run.
collect_ignore_glob = ["notebooks/zh/learner/*.ipynb"]


def _is_notebook_cell(item) -> bool:
    return item.nodeid.split("::")[0].endswith(".ipynb")


def pytest_configure(config):  # the markers themselves are declared in pyproject.toml
    config.stash[_EXECUTED] = ExecutedLessons()


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        path = Path(str(item.fspath))
        if _is_notebook_cell(item):
            item.add_marker(pytest.mark.lessons)
            if path.stem in PARITY_NOTEBOOKS and path.parent.name == "notebooks":
                item.add_marker(pytest.mark.parity)     # the sources, not the editions
        elif path.name in PARITY_MODULES:
            item.add_marker(pytest.mark.parity)
        elif path.name in AFTER_NOTEBOOKS:
            item.add_marker(pytest.mark.lessons)
        if "browser" in path.parts:
            item.add_marker(pytest.mark.browser)
    items.sort(key=lambda item: Path(str(item.fspath)).name in AFTER_NOTEBOOKS)  # stable


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    """A Chinese lesson (notebooks/zh/) runs with its checks' feedback in Chinese, as in
    JupyterLab (where the kernel learns the notebook's path); set before nbval starts the
    notebook's kernel, which inherits it."""
    import os

    if _is_notebook_cell(item) and "zh" in Path(str(item.fspath)).parts:
        os.environ["LLAMA_EDU_LANG"] = "zh_CN"
    else:
        os.environ.pop("LLAMA_EDU_LANG", None)   # everything else reads English
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield
    outputs = getattr(item, "test_outputs", None)
    if _is_notebook_cell(item) and outputs is not None:
        item.config.stash[_EXECUTED].record(Path(str(item.fspath)), item.cell_num, outputs)


class ExecutedLessons:
    """The outputs of every code cell nbval ran in this session, per notebook."""

    def __init__(self):
        self._outputs: dict[Path, dict[int, list]] = defaultdict(dict)

    def record(self, path: Path, cell_num: int, outputs: list) -> None:
        self._outputs[path.resolve()][cell_num] = copy.deepcopy(outputs)

    def paths(self) -> list[Path]:
        return list(self._outputs)

    def notebook(self, path: Path):
        """The notebook at `path` with the outputs of this session's run, or None when
        nbval did not run every one of its code cells."""
        import nbformat

        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        outputs = self._outputs.get(Path(path).resolve(), {})
        if len(outputs) != len(code):
            return None
        for number, cell in enumerate(code):
            cell.outputs = [nbformat.from_dict(dict(o)) for o in outputs[number]]
            cell.execution_count = number + 1
        return notebook


_EXECUTED = pytest.StashKey[ExecutedLessons]()


def pytest_sessionfinish(session, exitstatus):
    import os

    cache = os.environ.get("LLAMA_EDU_SITE_CACHE")
    if not cache or exitstatus != 0:      # a failed run's outputs are not the site's
        return
    from llama_edu import site

    executed = session.config.stash[_EXECUTED]
    runs = {path: executed.notebook(path) for path in site.site_lessons(executed.paths())}
    runs = {path: notebook for path, notebook in runs.items() if notebook is not None}
    if runs:
        count = site.cache_executed(runs, Path(cache))
        print(f"\nthe site's execution cache ({cache}) took this session's runs of "
              f"{count} lessons")


@pytest.fixture(scope="session")
def executed_lessons(request) -> ExecutedLessons:
    return request.config.stash[_EXECUTED]


def pytest_report_header(config):
    import torch

    return (f"torch {torch.__version__}: CPU kernels {torch.backends.cpu.get_cpu_capability()}"
            f", {torch.get_num_threads()} threads")
