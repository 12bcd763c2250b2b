"""Read what the backup's own configuration files say — never obey them.

The restored server runs with our config file; production's ``postgresql.conf`` and
``postgresql.auto.conf`` are only read here, to report what production preloaded
(``shared_preload_libraries``) and so what a drill runs without.  The syntax is PostgreSQL's
(guc-file.l): ``name = value`` or ``name value``, ``#`` comments, single-quoted values with
``''`` and backslash escapes, ``include``, ``include_if_exists`` and ``include_dir``; the last
assignment wins, and ``postgresql.auto.conf`` (ALTER SYSTEM) is read after everything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ConfiguredValue", "configured_value", "parse_conf_line", "split_list"]

_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.$]*)\s*(?:=\s*)?")
_BARE = re.compile(r"[^\s#']+")
_MAX_INCLUDE_DEPTH = 10  # PostgreSQL's CONF_FILE_MAX_DEPTH


@dataclass(frozen=True)
class ConfiguredValue:
    """A setting as the backup's files set it: ``value`` None with ``known`` True means not set
    (the built-in default); ``known`` False means the files cannot tell (``why``)."""

    value: str | None
    known: bool
    source: str = ""  # the file that set it, relative to PGDATA
    why: str = ""


def parse_conf_line(line: str) -> tuple[str, str] | None:
    """``"shared_preload_libraries = 'a,b'  # c"`` → ``("shared_preload_libraries", "a,b")``;
    None for a blank line, a comment or a line PostgreSQL would refuse."""
    match = _NAME.match(line)
    if match is None:
        return None
    rest = line[match.end():]
    if rest.startswith("'"):
        value, end = _quoted(rest)
        if value is None:
            return None
        rest = rest[end:]
    else:
        bare = _BARE.match(rest)
        if bare is None:
            return None
        value, rest = bare.group(), rest[bare.end():]
    rest = rest.strip()
    if rest and not rest.startswith("#"):
        return None
    return match.group(1).lower(), value


def _quoted(text: str) -> tuple[str | None, int]:
    out, i = [], 1
    while i < len(text):
        char = text[i]
        if char == "'":
            if text[i + 1:i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        if char == "\\" and i + 1 < len(text):
            out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        out.append(char)
        i += 1
    return None, i  # unterminated


def split_list(value: str) -> list[str]:
    """A list setting's elements (SplitDirectoriesString: commas, optional double quotes)."""
    items, current, quoted, i = [], [], False, 0
    while i < len(value):
        char = value[i]
        if char == '"':
            if quoted and value[i + 1:i + 2] == '"':  # "" inside quotes is one "
                current.append('"')
                i += 1
            else:
                quoted = not quoted
        elif char == "," and not quoted:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
        i += 1
    items.append("".join(current).strip())
    return [item for item in items if item]


def configured_value(pgdata: Path, name: str, *, auto_conf: Path | None = None) -> ConfiguredValue:
    """What ``name`` is set to by the configuration files found in the backup's data directory.

    ``auto_conf`` is where production's ``postgresql.auto.conf`` is now (the quarantine moves it
    aside).  Unknown where ``postgresql.conf`` is not in the data directory (Debian and Ubuntu keep
    it in /etc/postgresql) or includes a file outside it, unless ALTER SYSTEM set the value.
    """
    name = name.lower()
    auto = auto_conf if auto_conf is not None else pgdata / "postgresql.auto.conf"
    from_auto = _assignments(auto, pgdata, name, depth=0) if auto.is_file() else []
    if from_auto and from_auto[-1][0] is not None:
        value, _ = from_auto[-1]
        return ConfiguredValue(value, True, "postgresql.auto.conf")
    conf = pgdata / "postgresql.conf"
    if not conf.is_file():
        return ConfiguredValue(None, False, why="postgresql.conf is not in the data directory (a Debian/Ubuntu "
                                                 "layout keeps it in /etc/postgresql): not in the backup")
    found = _assignments(conf, pgdata, name, depth=0)
    unknown = [where for value, where in found if value is None]
    if unknown:
        return ConfiguredValue(None, False, why=unknown[-1])
    if not found:
        return ConfiguredValue(None, True)
    value, where = found[-1]
    return ConfiguredValue(value, True, where)


def _assignments(path: Path, pgdata: Path, name: str, *, depth: int) -> list[tuple[str | None, str]]:
    """(value, file) for each assignment of ``name`` in order, following includes inside
    ``pgdata``; (None, why) where an include cannot be read from the backup."""
    if depth > _MAX_INCLUDE_DEPTH:
        return [(None, f"{_rel(path, pgdata)}: includes nested deeper than {_MAX_INCLUDE_DEPTH}")]
    if path.is_symlink():  # the backup's content is untrusted: never follow it out of the run dir
        return [(None, f"{_rel(path, pgdata)} is a symbolic link: not read")]
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [(None, f"{_rel(path, pgdata)} cannot be read: {exc.strerror}")]
    found: list[tuple[str | None, str]] = []
    for line in text.splitlines():
        parsed = parse_conf_line(line)
        if parsed is None:
            continue
        key, value = parsed
        if key == name:
            found.append((value, _rel(path, pgdata)))
        elif key in ("include", "include_if_exists", "include_dir"):
            found += _include(path, pgdata, name, key, value, depth=depth)
    return found


def _include(path: Path, pgdata: Path, name: str, how: str, value: str, *, depth: int) -> list:
    target = (path.parent / value).resolve() if not value.startswith("/") else Path(value)
    root = pgdata.resolve()
    if not target.is_relative_to(root):
        return [(None, f"{_rel(path, pgdata)} includes {value}, which is outside the data directory")]
    if how == "include_dir":
        if not target.is_dir():
            return [(None, f"{_rel(path, pgdata)} includes the directory {value}, not in the backup")]
        files = sorted(p for p in target.iterdir() if p.suffix == ".conf" and not p.name.startswith("."))
        return [a for f in files for a in _assignments(f, pgdata, name, depth=depth + 1)]
    if not target.is_file():
        if how == "include_if_exists":
            return []
        return [(None, f"{_rel(path, pgdata)} includes {value}, not in the backup")]
    return _assignments(target, pgdata, name, depth=depth + 1)


def _rel(path: Path, pgdata: Path) -> str:
    try:
        return str(path.resolve().relative_to(pgdata.resolve()))
    except ValueError:
        return str(path)
