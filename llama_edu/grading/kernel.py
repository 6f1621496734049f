"""Run a notebook in a sandboxed kernel, and never hang or crash the grader doing it.

The kernel is started by jupyter_client with the `sandbox` wrapper as its command. It talks
over unix sockets in its work directory (`transport="ipc"`), because bubblewrap's
`--unshare-net` leaves it no loopback to share with the grader. `execute` runs the cells
one by one with:

- the per-cell timeout (nbclient interrupts the kernel, as before), and a hard stop a
  little later for a kernel that ignores the interrupt;
- a wall-clock cap for the whole notebook;
- a cap on each cell's output, so that an endless print cannot fill the grader's memory;
- a dead kernel (os._exit, a segfault, a memory limit) ending the run: the cells after it
  are marked, and the grader goes on with what the kernel recorded before.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import stat
import time

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_output

from .sandbox import Sandbox, SandboxError

OUTPUT_LIMIT = 1_000_000        # bytes of output kept per cell
HARD_STOP = 20                  # seconds past the cell timeout before the kernel is killed

DIED = "died"
TIMEOUT = "timeout"
WALL = "wall"
SKIPPED = "skipped"
CUT = "output-cut"


def _manager(sandbox: Sandbox) -> AsyncKernelManager:
    argv = sandbox.kernel_argv()

    class Specs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            # interrupts go as a message: a SIGINT to the process group would also reach
            # bubblewrap, which would end the sandbox instead of the cell
            return KernelSpec(argv=argv, display_name="llama-edu sandboxed grader",
                              language="python", resource_dir=str(sandbox.work),
                              interrupt_mode="message")

    class SandboxedKernelManager(AsyncKernelManager):
        def write_connection_file(self, **kwargs):
            super().write_connection_file(**kwargs)
            sandbox.give(self.connection_file)      # the kernel's uid must read its key

    return SandboxedKernelManager(kernel_spec_manager=Specs(), kernel_name="python3",
                                  transport="ipc", ip=str(sandbox.work / "kernel"),
                                  connection_file=str(sandbox.work / "kernel.json"),
                                  shutdown_wait_time=2.0)


class _Client(NotebookClient):
    """nbclient, with each cell's output capped."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sizes: dict[int, int] = {}
        self.cut: set[int] = set()

    def output(self, outs, msg, display_id, cell_index):
        size = len(json.dumps(msg.get("content", {}), default=str))
        total = self.sizes.get(cell_index, 0) + size
        self.sizes[cell_index] = total
        if total > OUTPUT_LIMIT:
            if cell_index not in self.cut:
                self.cut.add(cell_index)
                outs.append(new_output("stream", name="stdout", text=(
                    f"\n[the grader kept the first {OUTPUT_LIMIT:,} bytes of this cell's "
                    "output]\n")))
            return None
        return super().output(outs, msg, display_id, cell_index)


def _interrupted(cell: NotebookNode) -> bool:
    return any(o.output_type == "error" and o.get("ename") == "KeyboardInterrupt"
               for o in cell.get("outputs", []))


async def _run(client: _Client, timeout: int, wall: float, events: dict) -> None:
    deadline = time.monotonic() + wall
    stopped: str | None = None
    async with client.async_setup_kernel():
        for index, cell in enumerate(client.nb.cells):
            if cell.cell_type != "code" or not cell.source.strip():
                continue
            if stopped is not None:
                events[index] = SKIPPED
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                events[index] = stopped = WALL
                continue
            try:
                await asyncio.wait_for(client.async_execute_cell(cell, index),
                                       timeout=min(left, timeout + HARD_STOP))
            except DeadKernelError:
                events[index] = stopped = DIED
            except asyncio.TimeoutError:
                events[index] = stopped = WALL if left < timeout + HARD_STOP else TIMEOUT
                await client.km.shutdown_kernel(now=True)
            else:
                if _interrupted(cell):
                    events[index] = TIMEOUT
                if not await client.km.is_alive():
                    events[index] = stopped = DIED


def execute(notebook: NotebookNode, sandbox: Sandbox, timeout: int = 120,
            wall: float = 3600) -> tuple[NotebookNode, dict[int, str]]:
    """Run every code cell in the sandboxed kernel. Returns the executed notebook and the
    events by cell index: timeout, died, wall (over the whole cap), skipped, output-cut."""
    from jupyter_core.utils import run_sync

    notebook = copy.deepcopy(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = _Client(notebook, km=_manager(sandbox), timeout=timeout, allow_errors=True,
                     interrupt_on_timeout=True, startup_timeout=120,
                     shutdown_kernel="immediate",
                     resources={"metadata": {"path": str(sandbox.work)}})
    events: dict[int, str] = {}
    try:
        run_sync(_run)(client, timeout, wall, events)
    except (RuntimeError, TimeoutError) as error:
        if client.code_cells_executed == 0:
            raise SandboxError(f"the sandboxed kernel did not start ({error}); its log says: "
                               f"{_log_tail(sandbox)}") from None
        events.setdefault(max(events, default=0), DIED)
    finally:
        sandbox.stop()
    for index in client.cut:
        events.setdefault(index, CUT)
    return notebook, events


def _log_tail(sandbox: Sandbox) -> str:
    try:
        fd = os.open(sandbox.work / "kernel.log", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return "(no log)"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return "(no log)"
        f.seek(max(0, os.fstat(f.fileno()).st_size - 1500))
        text = f.read(1500).decode("utf-8", errors="replace")
    return text.strip() or "(empty)"
