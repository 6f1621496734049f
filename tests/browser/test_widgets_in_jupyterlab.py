"""Each lesson's explorers, used as a learner uses them: in JupyterLab, in Chromium.

For every lesson that shows an explorer: open it, run all cells, then for each explorer
move its main control and check that the figure is redrawn, with no error anywhere in the
notebook. Screenshots before and after go to test-artifacts/browser/.
"""

import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WITH_EXPLORERS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")
                        if "llama_edu.widgets" in p.read_text(encoding="utf-8"))
RUN_TIMEOUT_S = 240

_PANEL = """(path) => Array.from(window.jupyterapp.shell.widgets('main'))
                          .find(w => w.context && w.context.path === path)"""

_READY = f"""(path) => {{
    if (!window.jupyterapp) return false;
    const panel = ({_PANEL})(path);
    const kernel = panel && panel.sessionContext.session && panel.sessionContext.session.kernel;
    return !!kernel && kernel.status === 'idle';
}}"""

_DONE = f"""(path) => {{
    const panel = ({_PANEL})(path);
    const kernel = panel.sessionContext.session.kernel;
    const code = panel.content.widgets.filter(c => c.model.type === 'code');
    const errored = code.some(c => c.model.outputs.toJSON().some(o => o.output_type === 'error'));
    const finished = code.every(c => c.model.executionCount !== null);
    return errored || (finished && kernel.status === 'idle');
}}"""

_ERRORS = f"""(path) => {{
    const panel = ({_PANEL})(path);
    const errors = [];
    panel.content.widgets.forEach((c, i) => {{
        if (c.model.type !== 'code') return;
        c.model.outputs.toJSON().forEach(o => {{
            if (o.output_type === 'error') errors.push(`cell ${{i}}: ${{o.ename}}: ${{o.evalue}}`);
            const text = o.output_type === 'stream' && o.name === 'stderr' ? o.text : '';
            if (/Traceback|Error:/.test(text))
                errors.push(`cell ${{i}} stderr: ${{o.text.slice(-500)}}`);
        }});
    }});
    return errors;
}}"""


def _settled_image(image, previous: bytes | None, timeout: float = 45.0) -> bytes:
    """Screenshot of the explorer's figure once it has stopped changing (and, when
    `previous` is given, differs from it)."""
    deadline = time.time() + timeout
    last = image.screenshot()
    while time.time() < deadline:
        time.sleep(0.5)
        current = image.screenshot()
        if current == last and (previous is None or current != previous):
            return current
        last = current
    return last


def _move_main_control(explorer, page) -> str:
    """Move the explorer's first control one notch; returns what was done."""
    handle = explorer.locator(".widget-slider .noUi-handle")
    if handle.count():
        handle.first.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        return "slider moved right 3 steps"
    select = explorer.locator(".widget-dropdown select")
    if select.count():
        options = select.first.locator("option").all_inner_texts()
        current = select.first.input_value()
        values = select.first.locator("option").evaluate_all("os => os.map(o => o.value)")
        target = next(v for v in values if v != current)
        select.first.select_option(target)
        return f"dropdown changed from {current!r} to one of {options}"
    toggle = explorer.locator(".widget-toggle-button, .widget-checkbox input, "
                              ".widget-toggle-buttons button")
    if toggle.count():
        toggle.first.click()
        return "toggle clicked"
    raise AssertionError("the explorer has no slider, dropdown or toggle to move")


@pytest.mark.parametrize("name", WITH_EXPLORERS)
def test_explorers_redraw_when_moved(lab, browser, artifacts, name):
    base, token, _ = lab
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
        page.wait_for_function(_READY, arg=name, timeout=120_000, polling=500)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_function(_DONE, arg=name, timeout=RUN_TIMEOUT_S * 1000, polling=1000)
        assert page.evaluate(_ERRORS, name) == []

        explorers = page.locator(".llama-edu-explorer")
        assert explorers.count() >= 1, f"{name} imports llama_edu.widgets but shows no explorer"
        stem = Path(name).stem
        for i in range(explorers.count()):
            explorer = explorers.nth(i)
            explorer.scroll_into_view_if_needed()
            image = explorer.locator("img").first
            image.wait_for(state="visible", timeout=60_000)
            before = _settled_image(image, None)
            (artifacts / f"{stem}_{i}_before.png").write_bytes(before)
            action = _move_main_control(explorer, page)
            after = _settled_image(image, before)
            (artifacts / f"{stem}_{i}_after.png").write_bytes(after)
            assert after != before, f"{name} explorer {i}: the figure did not change ({action})"
            stderr = explorer.locator(
                '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]')
            assert stderr.count() == 0, f"{name} explorer {i}: {stderr.first.inner_text()}"
        assert page.evaluate(_ERRORS, name) == []
    finally:
        page.close()
