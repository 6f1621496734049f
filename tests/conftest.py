"""Shared pytest options."""


def pytest_addoption(parser):
    parser.addoption("--browser", action="store_true", default=False,
                     help="run the JupyterLab browser tests in tests/browser (needs Chromium "
                          "and the playwright package; see README)")
