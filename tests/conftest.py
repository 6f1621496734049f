"""Shared pytest options and fixtures."""

import pytest


def pytest_addoption(parser):
    parser.addoption("--browser", action="store_true", default=False,
                     help="run the JupyterLab browser tests in tests/browser (needs Chromium "
                          "and the playwright package; see README)")


@pytest.fixture(autouse=True)
def _close_figures():
    """Figures left open by one test must not change what the next test sees."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny shapes run fastest on one thread (no thread start-up or spinning per op)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
