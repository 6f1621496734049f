"""Where and how the learner's kernel runs: a contained process.

`Sandbox` prepares one kernel's home: a fresh work directory (the kernel's cwd, HOME and
TMPDIR) inside a root-owned folder, and, when the grader runs as root, a uid of its own
that owns nothing else on the machine. The kernel command is this module run as a
wrapper, `python -m llama_edu.grading.sandbox CONFIG -- python -m ipykernel_launcher ...`,
which reads its settings from CONFIG (then deletes it) and starts the kernel:

- under resource limits: address space, CPU seconds, file size, process count;
- with a scrubbed environment (PATH, HOME, TMPDIR, LANG, the package's PYTHONPATH and the
  thread-count variables; nothing that names the instructor's files) and no new privileges;
- as the sandbox uid (RLIMIT_NPROC is not enforced for root, and root could write anywhere);
- under bubblewrap when it is installed and works: the whole system read-only, a writable
  bind of the work directory only, private /tmp, /proc and /dev, the instructor's folders
  hidden under empty tmpfs, no network, and `--die-with-parent`.

`LLAMA_EDU_SANDBOX=limits` skips bubblewrap (the limits and the uid still apply);
`LLAMA_EDU_SANDBOX=bwrap` insists on it. The default, `auto`, uses it where it works and
warns where it does not: then the filesystem is not isolated.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

ENV_MODE = "LLAMA_EDU_SANDBOX"
PASS_THROUGH = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "ATEN_CPU_CAPABILITY", "CUDA_VISIBLE_DEVICES",
                "LLAMA_EDU_LANG")      # the language of the checks' feedback (notebooks/zh/)
GiB = 2**30


class SandboxError(RuntimeError):
    """The sandbox cannot be set up as asked (say what to install or change)."""


class SandboxWarning(UserWarning):
    """Grading goes on with less isolation than asked for."""


@dataclass
class Limits:
    """Resource limits of one kernel (setrlimit). Processes count threads too."""

    address_space: int = 8 * GiB
    cpu_seconds: int = 3600
    file_size: int = GiB // 2
    processes: int = 256

    def rlimits(self) -> dict[int, int]:
        return {resource.RLIMIT_AS: self.address_space, resource.RLIMIT_CPU: self.cpu_seconds,
                resource.RLIMIT_FSIZE: self.file_size, resource.RLIMIT_NPROC: self.processes}


def requested_mode() -> str:
    mode = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    if mode not in ("auto", "bwrap", "limits"):
        raise SandboxError(f"{ENV_MODE}={mode!r}: use auto, bwrap or limits")
    return mode


def _drop_to(uid: int | None):
    """A preexec function that becomes `uid` (and its own group) with no extra groups."""
    def drop():
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
    return drop


@functools.cache
def bwrap_works(uid: int | None) -> bool:
    """True when bubblewrap is installed and can make its namespaces here, as `uid`."""
    if shutil.which("bwrap") is None:
        return False
    try:
        result = subprocess.run(
            ["bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs",
             "/tmp", "--unshare-net", "--unshare-pid", "--die-with-parent", "true"],
            preexec_fn=_drop_to(uid), capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def _processes_of(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", encoding="utf-8") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            pids.append(int(entry))
                        break
        except OSError:
            continue
    return pids


def _free_uid() -> int:
    """A uid no account and no running process uses, for one kernel."""
    import pwd

    for _ in range(100):
        uid = random.randrange(200_000, 900_000)
        try:
            pwd.getpwuid(uid)
        except KeyError:
            if not _processes_of(uid):
                return uid
    raise SandboxError("found no free uid for the grading kernel")


def kill_all_of(uid: int) -> None:
    """SIGKILL every process of `uid` (kill(-1) as that uid, which a fork bomb cannot
    outrun), until none is left."""
    def kill_them():
        _drop_to(uid)()
        os.kill(-1, signal.SIGKILL)

    for _ in range(20):
        if not _processes_of(uid):
            return
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["/bin/true"], preexec_fn=kill_them, timeout=10)
        time.sleep(0.05)


def kill_marked(marker: bytes) -> None:
    """Without root: SIGKILL this user's processes whose environment holds `marker` (the
    kernel and what it started, unless it cleared its environment)."""
    for _ in range(20):
        found = []
        for pid in _processes_of(os.getuid()):
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.append(pid)
            except OSError:
                continue
        if not found:
            return
        for pid in found:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


def package_root() -> Path:
    import llama_edu

    return Path(llama_edu.__file__).resolve().parent.parent


def _python_paths() -> list[Path]:
    """What the kernel's Python must read: its prefixes and the folders on sys.path."""
    root = package_root()
    paths = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent]
    paths += [Path(p) for p in sys.path if p and Path(p).is_dir()]
    return sorted({p.resolve() for p in paths} - {root})


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost folder above `path` that other users may not enter (like /root)."""
    for folder in reversed(path.parents):
        try:
            if not os.stat(folder).st_mode & stat.S_IXOTH:
                return folder
        except OSError:
            return None
    return None


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


@dataclass
class Config:
    """What the wrapper needs, written to a file only the grader can read."""

    work: str
    uid: int | None
    limits: dict
    env: dict
    bwrap: list[str] | None
    log: str
    owner_token: str = ""
    read_all: bool = False      # keep CAP_DAC_READ_SEARCH: Python sits where the uid can't go


class Sandbox:
    """One kernel's contained home; `with Sandbox(...) as box:` cleans up after it."""

    def __init__(self, limits: Limits | None = None, hide: list[Path] = ()):
        self.limits = limits or Limits()
        self.hide = [Path(p).resolve() for p in hide]
        requested = requested_mode()
        self.uid = _free_uid() if os.geteuid() == 0 else None
        if requested == "limits":
            self.mode = "limits"
        elif bwrap_works(None):          # run by the grader's own user (root: privileged)
            self.mode = "bwrap"
        elif requested == "bwrap":
            raise SandboxError(f"{ENV_MODE}=bwrap but bubblewrap does not work here: install "
                               "it (apt-get install bubblewrap) or allow user namespaces")
        else:
            self.mode = "limits"
            warnings.warn("bubblewrap is not installed (or cannot run here): the learner's "
                          "kernel runs under resource limits only, and the filesystem is not "
                          "isolated. Install it: apt-get install bubblewrap", SandboxWarning,
                          stacklevel=2)

    def __enter__(self) -> Sandbox:
        self.outer = Path(tempfile.mkdtemp(prefix="llama-edu-grade-"))
        os.chmod(self.outer, 0o755)                 # traversable, not writable, by the kernel
        self.work = self.outer / "work"
        self.work.mkdir(mode=0o700)
        (self.work / "tmp").mkdir(mode=0o700)
        self.give(self.work, self.work / "tmp")
        self.config_path = self.outer / "sandbox.json"
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.outer, ignore_errors=True)

    def give(self, *paths: Path) -> None:
        """Hand files the grader wrote in the work directory to the kernel's uid."""
        if self.uid is not None:
            for path in paths:
                os.chown(path, self.uid, self.uid, follow_symlinks=False)

    def stop(self) -> None:
        """Kill whatever the kernel left running (a fork bomb's children included)."""
        if self.uid is not None:
            kill_all_of(self.uid)
        elif getattr(self, "token", None):
            kill_marked(f"LLAMA_EDU_KERNEL={self.token}".encode())

    def _env(self) -> dict[str, str]:
        python_dir = str(Path(sys.executable).parent)
        env = {"PATH": f"{python_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self.work),
               "TMPDIR": str(self.work / "tmp"), "LANG": "C.UTF-8",
               "PYTHONNOUSERSITE": "1", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
               "JUPYTER_PLATFORM_DIRS": "1", "MPLCONFIGDIR": str(self.work / ".matplotlib"),
               "LLAMA_EDU_RECORDS": str(self.work / ".llama_edu_records")}
        root = str(package_root())
        if root in [str(Path(p).resolve()) for p in
                    os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]:
            env["PYTHONPATH"] = root             # the grader's own llama_edu, nothing else
        env.update({k: os.environ[k] for k in PASS_THROUGH if k in os.environ})
        return env

    def _bwrap_args(self) -> list[str]:
        """Read-only system; the work directory writable; private /tmp, /proc, /dev; the
        instructor's folders (and, for root, folders like /root that Python sits under)
        hidden by empty tmpfs, with Python's own folders bound back inside them."""
        args = ["--ro-bind", "/", "/", "--dev", "/dev", "--perms", "1777", "--tmpfs",
                "/dev/shm", "--proc", "/proc", "--perms", "1777", "--tmpfs", "/tmp"]
        args += [a for d in reversed(self.work.parents) if _inside(d, Path("/tmp"))
                 and d != Path("/tmp") for a in ("--perms", "0755", "--dir", str(d))]
        args += ["--bind", str(self.work), str(self.work)]
        for device in sorted(Path("/dev").glob("nvidia*")) + [Path("/dev/dri")]:
            args += ["--dev-bind-try", str(device), str(device)]
        python, package = _python_paths(), package_root()
        hidden = {folder for folder in self.hide if folder.is_dir()
                  and not any(_inside(folder, p) for p in python)
                  and not _inside(package, folder) and not _inside(self.work, folder)}
        if self.uid is not None:
            hidden |= {a for a in map(_closed_ancestor, [*python, package]) if a is not None}
        binds = {p for p in [*python, package] if any(_inside(p, h) and p != h for h in hidden)}
        binds = {b for b in binds if not any(_inside(b, o) and b != o for o in binds)}
        steps = {(h, "--tmpfs") for h in hidden} | {(b, "--ro-bind") for b in binds}
        for b in binds:           # the folders a bind needs inside a tmpfs: enterable
            top = max((h for h in hidden if _inside(b, h)), key=lambda h: len(h.parts))
            steps |= {(d, "--dir") for d in b.parents if d != top and _inside(d, top)}
        order = {"--tmpfs": 0, "--dir": 1, "--ro-bind": 2}
        for path, option in sorted(steps, key=lambda s: (len(s[0].parts), order[s[1]])):
            args += {"--tmpfs": ["--perms", "0755", "--tmpfs", str(path)],
                     "--dir": ["--perms", "0755", "--dir", str(path)],
                     "--ro-bind": ["--ro-bind", str(path), str(path)]}[option]
        if self.uid is not None:       # bwrap runs as root: let the inner step drop to uid
            args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
        return args + ["--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
                       "--die-with-parent", "--chdir", str(self.work)]

    def kernel_argv(self) -> list[str]:
        """The kernel spec's argv: this module as a wrapper around ipykernel."""
        limits = self.limits
        if self.uid is None:   # RLIMIT_NPROC counts all of this user's processes
            limits = replace(limits, processes=limits.processes + len(_processes_of(os.getuid())))
        self.token = os.urandom(8).hex()
        read_all = self.uid is not None and self.mode == "limits" and any(
            _closed_ancestor(p) for p in [*_python_paths(), package_root()])
        config = Config(work=str(self.work), uid=self.uid, limits=asdict(limits),
                        env=self._env(), bwrap=self._bwrap_args() if self.mode == "bwrap"
                        else None, log=str(self.work / "kernel.log"), owner_token=self.token,
                        read_all=read_all)
        fd = os.open(self.config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(config), f)
        return [sys.executable, "-m", "llama_edu.grading.sandbox", str(self.config_path), "--",
                sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]


# ---------------------------------------------------------------------------------------
# the wrapper: python -m llama_edu.grading.sandbox CONFIG -- CMD...
# and its inner step under bubblewrap: python -m llama_edu.grading.sandbox --inner JSON -- CMD

CAP_DAC_READ_SEARCH = 2


def _no_new_privileges() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0)   # PR_SET_NO_NEW_PRIVS


def _keep_read_access() -> None:
    """After setuid: keep only CAP_DAC_READ_SEARCH, as an ambient capability, so the kernel
    can read (never write) the Python that lives under a folder like /root."""
    libc = ctypes.CDLL(None, use_errno=True)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    bit = 1 << CAP_DAC_READ_SEARCH
    data = (Data * 2)(Data(bit, bit, bit), Data(0, 0, 0))
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    if libc.prctl(47, 2, CAP_DAC_READ_SEARCH, 0, 0) != 0:        # PR_CAP_AMBIENT_RAISE
        raise OSError(ctypes.get_errno(), "could not keep read access to Python")


def contain(uid: int | None, limits: dict, read_all: bool = False) -> None:
    """Resource limits, then the sandbox uid (its own group, no other groups), then no new
    privileges: what every kernel goes through right before it starts."""
    for which, value in Limits(**limits).rlimits().items():
        resource.setrlimit(which, (value, value))
    if uid is not None:
        libc = ctypes.CDLL(None, use_errno=True)
        if read_all:
            libc.prctl(8, 1, 0, 0, 0)                              # PR_SET_KEEPCAPS
        _drop_to(uid)()
        if read_all:
            _keep_read_access()
    _no_new_privileges()


def _become_kernel(config: dict, command: list[str]) -> None:
    """In the wrapper's child: log, environment, limits, uid, then exec the kernel (under
    bubblewrap, whose inner step does the uid part)."""
    os.umask(0o077)
    log = os.open(config["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    if config["uid"] is not None:
        os.fchown(log, config["uid"], config["uid"])
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(config["work"])
    env = dict(config["env"], LLAMA_EDU_KERNEL=config["owner_token"])
    if config["bwrap"] is None:
        contain(config["uid"], config["limits"], config["read_all"])
        os.execvpe(command[0], command, env)
    for which, value in Limits(**config["limits"]).rlimits().items():
        resource.setrlimit(which, (value, value))
    inner = json.dumps({"uid": config["uid"], "limits": config["limits"]})
    read, write = os.pipe()
    os.write(write, b"".join(a.encode() + b"\0" for a in config["bwrap"]))
    os.close(write)
    os.set_inheritable(read, True)
    os.execvpe("bwrap", ["bwrap", "--args", str(read), sys.executable, "-m",
                         "llama_edu.grading.sandbox", "--inner", inner, "--", *command], env)


def main(argv: list[str]) -> int:
    if len(argv) >= 4 and argv[0] == "--inner" and argv[2] == "--":
        settings = json.loads(argv[1])
        contain(settings["uid"], settings["limits"])
        os.execvp(argv[3], argv[3:])
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m llama_edu.grading.sandbox CONFIG -- COMMAND...", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        config = json.load(f)
    os.unlink(argv[0])                           # read once; the kernel never sees it
    command = argv[2:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an interrupt is for the kernel
    pid = os.fork()
    if pid == 0:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        try:
            _become_kernel(config, command)
        finally:
            os._exit(127)
    for forwarded in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(forwarded, lambda signum, frame: os.kill(pid, signum))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) % 256


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
