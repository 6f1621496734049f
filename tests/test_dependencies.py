"""The core package is light: the model, tokenizer, training and generation import neither
plotting, widgets, notebooks nor the interop and grading extras."""

import subprocess
import sys

import pytest

HEAVY = ("matplotlib", "ipywidgets", "IPython", "transformers", "sentencepiece", "nbformat",
         "nbgrader", "jupyter_client", "tiktoken", "regex")


@pytest.mark.parametrize("module", ["llama_edu.model", "llama_edu.tokenizer", "llama_edu.train",
                                    "llama_edu.generate", "llama_edu.checkpoint",
                                    "llama_edu.chat"])
def test_core_modules_import_no_extra(module):
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "", f"{module} imports {result.stdout.strip()}"


def test_pyproject_declares_the_core_and_every_extra():
    from pathlib import Path

    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml")
                            .read_text(encoding="utf-8"))["project"]
    core = {d.split(">")[0].split("=")[0] for d in project["dependencies"]}
    assert core == {"torch", "numpy", "safetensors", "tqdm"}
    extras = project["optional-dependencies"]
    assert {"notebooks", "interop", "grading", "test", "llama3"} <= set(extras)
