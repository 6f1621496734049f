"""Fetching a pinned npm package and reading the data baked into its JavaScript (dev only).

The tokenizer build scripts use this at development time; nothing in the course runs it.
`npm pack NAME@VERSION` downloads the package's tarball (npm checks the registry's sha512);
we check its sha256 against the pinned one as well, so a re-published or edited tarball
stops the build instead of changing the assets.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import tarfile
from pathlib import Path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fetch_package(name: str, version: str, tarball_sha256: str, folder: Path,
                  tarball: Path | None = None) -> Path:
    """The unpacked `package/` folder of name@version; `tarball` skips the download."""
    folder = Path(folder)
    if tarball is None:
        try:
            out = subprocess.run(["npm", "pack", f"{name}@{version}", "--silent",
                                  "--pack-destination", str(folder)],
                                 check=True, capture_output=True, text=True).stdout
        except FileNotFoundError:
            raise SystemExit("npm is not installed; install Node.js (apt-get install npm) or "
                             "pass --tarball with a downloaded .tgz") from None
        except subprocess.CalledProcessError as error:
            raise SystemExit(f"npm pack {name}@{version} failed:\n{error.stderr}") from None
        tarball = folder / out.strip().splitlines()[-1]
    digest = sha256_of(tarball)
    if digest != tarball_sha256:
        raise SystemExit(f"{tarball} has sha256 {digest}, but {name}@{version} was pinned at "
                         f"{tarball_sha256}; the package is not the one this script was "
                         "checked with")
    safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
    with tarfile.open(tarball) as archive:
        archive.extractall(folder, **safe)
    package = folder / "package"
    meta = (package / "package.json").read_text(encoding="utf-8")
    if f'"version": "{version}"' not in meta or f'"name": "{name}"' not in meta:
        raise SystemExit(f"{tarball} does not hold {name}@{version}")
    return package


def js_string(source: str, name: str) -> str:
    """The value of a `const NAME = "..."` string literal in a JavaScript file."""
    found = re.findall(rf'const {re.escape(name)} = "([^"\\]*)"', source)
    if len(found) != 1:
        raise SystemExit(f"expected one `const {name} = \"...\"` in the package's JavaScript, "
                         f"found {len(found)}; the package layout has changed")
    return found[0]
