"""Just enough of Docker's file formats to replay the project's image build in a shell.

No Docker engine runs where the tests do, so tests/test_container.py reads the
Dockerfile, the .dockerignore and config/compose.yaml with these helpers and runs
their steps on this machine, with container paths mapped below a temporary root.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    flags: dict[str, str]  # leading --name=value options (--from, --interval, ...)
    args: str  # the rest, continuation lines joined

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form RUN, CMD or HEALTHCHECK CMD, else None."""
        text = self.args.removeprefix("CMD ").strip() if self.keyword == "HEALTHCHECK" \
            else self.args
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name}, got {found}"
        return found[0]


def logical_lines(text: str) -> Iterator[str]:
    """Instructions with their backslash continuations joined; comments dropped."""
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, even inside a continuation
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        yield pending + stripped
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"


def parse_dockerfile(text: str) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(text):
        keyword, _, rest = line.partition(" ")
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        keyword = keyword.upper()
        if keyword == "FROM":
            words = rest.split()
            stage = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], stage))
            continue
        assert stages, f"{keyword} before FROM"
        stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return stages


def env_pairs(instruction: Instruction) -> list[tuple[str, str]]:
    """`ENV A=1 B=2` (the `ENV A 1` form is not used here)."""
    pairs = []
    for word in shlex.split(instruction.args):
        name, sep, value = word.partition("=")
        assert sep, f"ENV without '=': {instruction.args!r}"
        pairs.append((name, value))
    return pairs


def expand(value: str, environ: Mapping[str, str]) -> str:
    """Docker's $VAR and ${VAR} substitution in ENV values."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))",
                  lambda m: environ.get(m.group(1) or m.group(2), ""), value)


class RootMirror:
    """Container paths mapped below one directory of this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, container_path: str) -> Path:
        return self.root / container_path.lstrip("/")

    def translate(self, text: str) -> str:
        """Absolute paths in a command or value, moved below the root."""
        return re.sub(r"(?:^|(?<=[\s=:\"']))/(?=\w)", f"{self.root}/", text)


# .dockerignore: Go's filepath.Match per path element, `**` for any number of them;
# the last matching line decides; a pattern that matches a directory covers its files.

def _pattern_regex(pattern: str) -> re.Pattern[str]:
    regex = ""
    elements = pattern.split("/")
    for index, element in enumerate(elements):
        last = index == len(elements) - 1
        if element == "**":
            regex += ".*" if last else "(?:[^/]+/)*"
            continue
        position = 0
        while position < len(element):
            char = element[position]
            if char == "[" and "]" in element[position:]:
                close = element.index("]", position)
                body = element[position + 1 : close]
                if body[:1] in ("^", "!"):
                    body = "^" + body[1:]
                regex += f"[{body}]"
                position = close + 1
                continue
            regex += "[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char)
            position += 1
        if not last:
            regex += "/"
    return re.compile(regex)


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[bool, str, re.Pattern[str]], ...]  # (exception, pattern, regex)

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        rules = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            exception = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((exception, pattern, _pattern_regex(pattern)))
        return cls(tuple(rules))

    def excludes(self, relative: str) -> bool:
        """Whether a path of the build context stays out of it."""
        parents = relative.split("/")
        candidates = ["/".join(parents[: i + 1]) for i in range(len(parents))]
        excluded = False
        for exception, _, regex in self.rules:
            if any(regex.fullmatch(c) for c in candidates):
                excluded = not exception
        return excluded

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception could bring back something inside an excluded directory."""
        return any(exception and (pattern.startswith(directory + "/") or pattern == directory)
                   for exception, pattern, _ in self.rules)


def build_context(source: Path, ignore: DockerIgnore, target: Path) -> list[str]:
    """Copy what `docker build` would send as the context; the copied relative paths."""
    copied = []
    for directory, dirs, files in os.walk(source):
        here = Path(directory).relative_to(source)
        keep = []
        for name in dirs:
            relative = (here / name).as_posix()
            if not ignore.excludes(relative) or ignore.may_include_below(relative):
                keep.append(name)
        dirs[:] = keep
        for name in files:
            relative = (here / name).as_posix()
            if ignore.excludes(relative):
                continue
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relative, target / relative)
            copied.append(relative)
    return sorted(copied)


def copy_into(context: Path, sources: list[str], destination: Path, dest_is_dir: bool) -> None:
    """COPY: a directory's contents, or files, into the destination."""
    for source in sources:
        path = context / source
        assert path.exists(), f"COPY {source}: not in the build context (.dockerignore?)"
        if path.is_dir():
            shutil.copytree(path, destination, dirs_exist_ok=True)
        else:
            target = destination / path.name if dest_is_dir else destination
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def interpolate(value: Any, environ: Mapping[str, str]) -> Any:
    """Compose's interpolation, `${VAR:-default}`, `${VAR-default}`, `$VAR`, `$$`, at
    every depth of a loaded compose file."""
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("plain")
        operator, default = match.group("op"), match.group("default") or ""
        current = environ.get(name)
        if operator == ":-" and not current:
            return default
        if operator == "-" and current is None:
            return default
        return current or ""

    pattern = (r"\$\$|\$\{(?P<braced>\w+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
               r"|\$(?P<plain>\w+)")
    return re.sub(pattern, substitute, value)
