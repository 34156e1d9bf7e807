"""Every file the project writes or reads back goes through here.

Writes are atomic (a temp beside the target, then a rename): a result file or directory is
complete or absent, never half-written. Temps are named `.NAME.tmp-PID-*`; one left by a
killed process is removed at the next write of NAME, or by `clean_stale_temps` over a whole
tree. JSON is strict (no NaN/Infinity). A JSONL log is appended one whole line at a time,
rewritten atomically, and read back with a torn last line (a kill mid-write) dropped with a
note. Text is UTF-8 or a one-line error. Every file written is an ordinary file (0666 less
the umask), safetensors included; an output that is a symbolic link is refused, never
followed or replaced. Output paths are checked before any work: their kind, names too long
for the file system once a temp suffix is added, and where they lie among the inputs.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from kentropy.errors import KentropyError

_TEMP = re.compile(r"\.tmp-(\d+)-")  # `.NAME.tmp-PID-XXXX[.tmp]`
_TEMP_OF = re.compile(r"^\.(.+)\.tmp-\d+-")
_LEGACY_TEMP = re.compile(r"^\..+\.[a-z0-9_]{8}(\.tmp)?$")  # how mkstemp/mkdtemp named temps before the pid was in the name


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _stale(name: str, legacy: bool) -> bool:
    m = _TEMP.search(name)
    return (m is not None and not _alive(int(m.group(1)))) or (legacy and m is None and _LEGACY_TEMP.match(name) is not None)


def clean_stale_temps(directory: str | os.PathLike, name: str | None = None, *, legacy: bool = False,
                      recursive: bool = False) -> list[Path]:
    """Remove temps of interrupted atomic writes in `directory` (of target `name`, or of any target;
    `recursive`: anywhere below it too), and return them.

    A temp whose process is still alive is kept (it may be writing right now). `legacy` also
    removes temps named without a pid (`.NAME.XXXXXXXX`, older versions): only for a directory
    that holds nothing but our own outputs (a run's checkpoints, a lab's stage).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    if recursive:
        found = sorted((p for p in directory.rglob(".*") if _stale(p.name, legacy)), key=lambda p: len(p.parts))
    else:
        found = [p for p in directory.glob(f".{glob.escape(name)}.*" if name else ".*") if _stale(p.name, legacy)]
    removed = []
    for p in found:
        if any(r in p.parents for r in removed):
            continue  # inside a temp directory removed just before
        _remove(p)
        removed.append(p)
    return removed


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.tmp-{os.getpid()}-"


_PID_DIGITS = 7  # Linux's pid_max is at most 2**22 (4194304)
_RANDOM = 8  # the characters mkstemp and mkdtemp add


def temp_target(name: str) -> str | None:
    """The name whose atomic write a temp named `name` belongs to (`.NAME.tmp-PID-...`), or None."""
    m = _TEMP_OF.match(name)
    return m.group(1) if m else None


def temp_name(name: str) -> str:
    """The longest temp name an atomic write of `name` takes (pid and random part at their widest)."""
    return f".{name}.tmp-{'9' * _PID_DIGITS}-{'x' * _RANDOM}.tmp"


def _file_mode(path: Path) -> None:
    """An ordinary file's mode (0666 less the umask: 0644 usually), whatever the writer chose
    (mkstemp and safetensors make 0600)."""
    os.chmod(path, 0o666 & ~_umask())


def _refuse_symlink(path: Path, flag: str | None = None) -> None:
    """Outputs are never symbolic links: an atomic rename would replace the link, a plain write follow it."""
    if path.is_symlink():
        raise KentropyError(f"{flag + ' ' if flag else ''}{path}: is a symbolic link (to {os.readlink(path)}); "
                            f"give the path it points to, or another path")


def _check_parent(path: Path) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise KentropyError(f"{path}: {parent} is a file, not a directory")
            return


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temp file beside `path`, then rename it onto `path`."""
    path = Path(path)
    _refuse_symlink(path)
    if path.is_dir():
        raise KentropyError(f"{path}: is a directory (expected a file path)")
    _check_parent(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        _file_mode(Path(tmp))  # after the write: a writer that replaces the file picks its own mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_dir_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_dir)` on a fresh directory beside `path`, then put it in place of `path`.

    A reader sees the old directory or the complete new one; a failed write leaves no trace.
    """
    path = Path(path)
    _refuse_symlink(path)
    if path.exists() and not path.is_dir():
        raise KentropyError(f"{path}: exists and is not a directory")
    _check_parent(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; outputs are ordinary directories
    old = None
    try:
        write(tmp)
        for f in tmp.rglob("*"):
            if f.is_file() and not f.is_symlink():
                _file_mode(f)
        if path.exists():
            # the old one moves aside (a stale temp if a kill lands here) rather than being deleted first
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), dir=path.parent))
            os.rename(path, old / "old")
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "old").exists() and not path.exists():
            os.rename(old / "old", path)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return path


def make_dir(path: str | os.PathLike) -> Path:
    """Create a directory (and parents) with the umask's permissions; an existing one is fine."""
    path = Path(path)
    _refuse_symlink(path)
    if path.exists() and not path.is_dir():
        raise KentropyError(f"{path}: exists and is not a directory")
    _check_parent(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- JSON ---------------------------------------------------------------------------------
def _nonfinite(obj: Any, where: str = "") -> str | None:
    """The location of the first NaN/inf in `obj` (e.g. `results[0].knowledge_entropy`), or None."""
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (where or "the value")
    if isinstance(obj, dict):
        items = ((f"{where}.{k}" if where else str(k), v) for k, v in obj.items())
    elif isinstance(obj, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(obj))
    else:
        return None
    for w, v in items:
        found = _nonfinite(v, w)
        if found:
            return found
    return None


def json_text(obj: Any, path: str | os.PathLike = "JSON", indent: int | None = 2) -> str:
    """Strict JSON text of `obj`: a NaN or inf is refused, naming where it is."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False, ensure_ascii=False)
    except ValueError:
        where = _nonfinite(obj)
        if where is None:
            raise
        raise KentropyError(f"{path}: refusing to write a non-finite number at {where}") from None


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented, strict JSON, atomically."""
    text = json_text(obj, path) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> Path:
    """Write one strict JSON object per line, atomically (the whole file at once)."""
    text = "".join(json_text(r, path, indent=None) + "\n" for r in records)
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def append_jsonl(path: str | os.PathLike, record: Any) -> None:
    """Append one record as one line, in a single write: a kill leaves at most a torn last line."""
    path = Path(path)
    line = (json_text(record, path, indent=None) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # never glue a record onto a line that lacks its newline
        os.write(fd, line)
    finally:
        os.close(fd)


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 text file; missing or not UTF-8 is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise KentropyError(f"{what} {path}: file not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise KentropyError(f"{what} {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON, turning a missing, non-UTF-8 or malformed file into a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise KentropyError(f"{what} not found: {path}")
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise KentropyError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def read_jsonl(path: str | os.PathLike, what: str = "log") -> list:
    """The records of a JSONL file ([] when it is absent). A torn last line (not JSON: a kill
    mid-write) is dropped with a note on stderr; a bad line elsewhere is a one-line error."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    try:
        tail = [json.loads(torn.decode("utf-8"))] if torn.strip() else []
        torn = b""  # a complete record that only lacks its newline
    except (UnicodeDecodeError, json.JSONDecodeError):
        tail = []
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line.decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError):
            if n == len(lines) and not torn:  # a torn last line that happens to end with a newline
                torn = line
                break
            raise KentropyError(f"{what} {path}:{n}: not a JSON line") from None
    records += tail
    if torn.strip():
        print(f"note: {path}: dropped a torn last line ({len(torn)} bytes; an interrupted write)", file=sys.stderr)
    return records


def content_digest(path: str | os.PathLike) -> str | None:
    """sha256 of a file's bytes, or of a directory's files (relative names and bytes, in name order);
    None when `path` is not on disk (a dataset name)."""
    import hashlib

    p = Path(path)
    if not p.exists():
        return None
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    for f in files:
        if f is not p:
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# ---- output paths, checked before any compute ---------------------------------------------
def _name_max(path: Path) -> int:
    """The file system's limit on one name, in bytes, where `path` is (or would be) created."""
    for parent in path.parents:
        try:
            if parent.is_dir():
                return os.pathconf(parent, "PC_NAME_MAX")
        except (OSError, ValueError):  # a name too long itself: look further up
            continue
    return 255


def check_name_fits(path: str | os.PathLike, flag: str = "--out", suffix: str = "", what: str = "") -> None:
    """Every name along `path` fits the file system, and so does the temp that an atomic write of its
    last name + `suffix` takes (`what` says which file that is, e.g. "its partial file"): a name that
    overflows is refused here, before any work, not when the result is written."""
    p = Path(os.path.abspath(path))
    limit = _name_max(p)
    for part in p.parts[1:-1]:
        if len(os.fsencode(part)) > limit:
            raise KentropyError(f"{flag} {path}: the directory name {part[:40]}... is {len(os.fsencode(part))} bytes, "
                                f"over the file system's limit of {limit}")
    name = p.name + suffix
    need = len(os.fsencode(temp_name(name)))
    if need > limit:
        room = limit - (need - len(os.fsencode(p.name)))
        target = f"{what} {name[:40]}... " if what else ""
        raise KentropyError(f"{flag} {path}: name too long: {target}is written through a temp file .NAME.tmp-PID-XXXXXXXX.tmp "
                            f"of {need} bytes, over the file system's limit of {limit}; use a name of at most {room} bytes")


def _where(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def check_paths_apart(outputs: list[tuple[str, str]], inputs: list[tuple[str, str]]) -> None:
    """Outputs and inputs, each (flag, path), resolved (links, `..`, relative to absolute) before they are
    compared: no two outputs on one path or one inside the other, no output on an input, no input inside
    an output (replacing or deleting the output would take it along), no output inside an input (it
    would change what it reads). An input that is not on disk (a hub id, a dataset name) is compared
    as a path only for equality."""
    for i, (fa, a) in enumerate(outputs):
        ra = _where(a)
        for fb, b in outputs[i + 1:]:
            rb = _where(b)
            if ra == rb:
                raise KentropyError(f"{fb} {b}: the same path as {fa}; give each output its own path")
            if ra in rb.parents or rb in ra.parents:
                inner, outer = ((fb, b), (fa, a)) if ra in rb.parents else ((fa, a), (fb, b))
                raise KentropyError(f"{inner[0]} {inner[1]}: inside {outer[0]} {outer[1]}; give each output its own place")
        for fb, b in inputs:
            rb = _where(b)
            if ra == rb:
                raise KentropyError(f"{fa} {a}: the same path as the input {fb}; it would be overwritten")
            if not os.path.exists(b):
                continue
            if ra in rb.parents:
                raise KentropyError(f"{fa} {a}: holds the input {fb} {b}; writing {fa} would replace or delete it "
                                    f"(choose an {fa} that holds no input)")
            if rb in ra.parents:
                raise KentropyError(f"{fa} {a}: inside the input {fb} {b}; write outputs outside the inputs")


def check_out_file(path: str | os.PathLike | None, flag: str = "--out") -> None:
    """A file output: refuse an existing directory, a symbolic link, a parent that is a file, or a name too long."""
    if path is None:
        return
    p = Path(path)
    check_name_fits(p, flag)
    _refuse_symlink(p, flag)
    if p.is_dir():
        raise KentropyError(f"{flag} {path}: is a directory (expected a file path)")
    try:
        _check_parent(p)
    except KentropyError as e:
        raise KentropyError(f"{flag} {e}") from None


def check_out_dir(path: str | os.PathLike | None, flag: str = "--out") -> None:
    """A directory output: refuse an existing file, a symbolic link, a parent that is a file, or a name too long."""
    if path is None:
        return
    p = Path(path)
    check_name_fits(p, flag)
    _refuse_symlink(p, flag)
    if p.exists() and not p.is_dir():
        raise KentropyError(f"{flag} {path}: exists and is not a directory")
    try:
        _check_parent(p)
    except KentropyError as e:
        raise KentropyError(f"{flag} {e}") from None
