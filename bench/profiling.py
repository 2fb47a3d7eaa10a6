"""py-spy attached to a running authbroker process, and a text summary of what it saw.

The raw output (collapsed stacks, one `frame;frame;… count` per line) is kept next to the
summary: load it in speedscope or flamegraph.pl for the full picture.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


class Recorder:
    def __init__(self, pid: int, raw_path: Path, rate: int = 100):
        self.raw_path = raw_path
        exe = py_spy()
        self.process: subprocess.Popen[bytes] | None = None
        self.error: str | None = None
        if exe is None:
            self.error = "py-spy is not installed (.venv/bin/pip install py-spy)"
            return
        self.process = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--nonblocking",
                "-o",
                str(raw_path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            _, err = self.process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            _, err = self.process.communicate()
        if not self.raw_path.exists():
            self.error = f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"


def _short(frame: str) -> tuple[str, str]:
    """(function with its file, package) of one frame, line numbers dropped. py-spy names files
    relative to their sys.path entry, so the first path component is the package."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip(), "other"
    func, file = match["func"], match["file"].replace("\\", "/")
    group = file.split("/", 1)[0].removesuffix(".py") if "/" in file else file.removesuffix(".py")
    return f"{func} ({file})", group


PRODUCT_FILES = ("storage/", "worker/", "handlers/")


def _write_caller(frames: list[str]) -> str:
    """Who caused a socket write: the library path and the nearest product function."""
    names = " ".join(frames)
    product = [f.split(" (")[0] for f in frames if any(p in f for p in PRODUCT_FILES)]
    where = product[-1] if product else "?"
    if "PoolConnectionHolder.release" in names:
        return "asyncpg pool reset on release"
    if "(asyncpg/" in names:
        return f"asyncpg query from {where}"
    if "(arq/" in names:
        arq = [f.split(" (")[0] for f in frames if "(arq/" in f]
        return f"redis from arq {arq[-1]}"
    if "(redis/" in names:
        return f"redis from {where}"
    if "(aiohttp/client" in names:
        return f"aiohttp client request from {where}"
    if "(aiohttp/" in names:
        return "aiohttp server response"
    return "other"


def summarize(raw_path: Path, top: int = 18) -> str:
    """Top functions by own time and by inclusive time, and time by package."""
    own: Counter[str] = Counter()
    writes: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += count
        names = [_short(f) for f in frames]
        leaf, group = names[-1]
        own[leaf] += count
        if leaf.startswith("_SelectorSocketTransport.write "):
            writes[_write_caller(frames)] += count
        groups[group] += count
        for name in {n for n, _ in names}:
            inclusive[name] += count
    if total == 0:
        return "no samples"
    out = [f"{total} samples (on-CPU only; idle waits excluded)", "", "time by package (own):"]
    out += [f"  {100 * n / total:5.1f}%  {g}" for g, n in groups.most_common(14)]
    out += ["", "top functions by own time:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += [
        "",
        f"socket writes (the send system call) by cause: {100 * sum(writes.values()) / total:.1f}%"
        " of samples (stacks py-spy cut short in --nonblocking mode show '?'):",
    ]
    out += [f"  {100 * n / total:5.1f}%  {w}" for w, n in writes.most_common(16)]
    out += ["", "top functions by inclusive time:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top + 12)]
    return "\n".join(out)
