"""Every command line in the README's and docs' ```bash blocks, and every command written inline in their prose
(`instance-loc --edits FILE`), uses flags its program has.

The project's commands (pyproject's [project.scripts], or ``python -c "from M import entrypoint; entrypoint()"``) are
checked against their tyro ``--help``, run once per program. ``ns-train <method>`` is checked against the method's
config (each dotted flag must name a field), ``make`` against the Makefile's targets, and ``python benchmarks/X.py``
against the script's source. Other programs (apt-get, ns-process-data, ns-render, ray, ...) are not checked.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS: Dict[str, str] = {name: target.split(":")[0] for name, target in PYPROJECT["project"]["scripts"].items()}
METHODS: Dict[str, str] = dict(PYPROJECT["project"]["entry-points"]["nerfstudio.method_configs"])
GLOBAL_FLAGS = {"--help", "--verbose"}  # --verbose is read by every command's error wrapper, not by tyro
ENTRYPOINT_RE = re.compile(r"from\s+([\w.]+)\s+import\s+entrypoint")
FLAG_RE = re.compile(r"--[A-Za-z0-9][\w.-]*")
OPTION_LINE_RE = re.compile(r"^[│|]?\s{0,2}(-.*)$")


def bash_commands(path: Path) -> List[str]:
    """Command lines of the ```bash blocks of a Markdown file (continuations joined, comments dropped)."""
    commands, block, inside = [], [], False
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            if inside:
                joined = "\n".join(block).replace("\\\n", " ")
                commands += [c for c in joined.splitlines() if c.strip()]
                block = []
            inside = line.strip() == "```bash" and not inside
            continue
        if inside:
            block.append(line)
    return commands


FENCE_RE = re.compile(r"^\s*```.*?^\s*```[^\n]*$", re.S | re.M)
SPAN_RE = re.compile(r"(?<!`)`([^`]+)`(?!`)")


def inline_commands(path: Path) -> List[str]:
    """Code spans of a Markdown file's prose (outside fenced blocks; a span may run over a line break) whose first
    word is a program this test checks: the project's commands, ns-train, make and python."""
    prose = FENCE_RE.sub("", path.read_text())
    spans = [" ".join(m.group(1).split()) for m in SPAN_RE.finditer(prose)]
    checked = set(SCRIPTS) | {"ns-train", "make"}
    return [s for s in spans if s.split() and (s.split()[0] in checked or s.split()[0].startswith("python"))]


def fenced_blocks(path: Path) -> List[Tuple[str, List[str]]]:
    """(language, lines) of every fenced block of a Markdown file."""
    blocks, lang, lines = [], None, []
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            if lang is None:
                lang, lines = line.strip()[3:].strip(), []
            else:
                blocks.append((lang, lines))
                lang = None
            continue
        if lang is not None:
            lines.append(line)
    return blocks


def segments(command: str) -> List[List[str]]:
    """The simple commands of one line (split at && ; |), environment assignments removed."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:  # prose with an unpaired quote: its words are still the command's
        tokens = command.split()
    out, current = [], []
    for tok in tokens:
        if tok in ("&&", "||", ";", "|"):
            out.append(current)
            current = []
        else:
            current.append(tok)
    out.append(current)
    result = []
    for seg in out:
        while seg and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", seg[0]):
            seg = seg[1:]
        if seg:
            result.append(seg)
    return result


def flags_of(args: List[str]) -> List[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def classify(seg: List[str]) -> Tuple[str, str, List[str]]:
    """(kind, target, flags): kind is module, ns-train, make, script or skip."""
    prog = os.path.basename(seg[0])
    if prog in SCRIPTS:
        return "module", SCRIPTS[prog], flags_of(seg[1:])
    if prog.startswith("python"):
        if len(seg) > 2 and seg[1] == "-c":
            match = ENTRYPOINT_RE.search(seg[2])
            if match:
                return "module", match.group(1), flags_of(seg[3:])
            return "skip", prog, []
        if len(seg) > 1 and seg[1].endswith(".py"):
            return "script", seg[1], flags_of(seg[2:])
        return "skip", prog, []
    if prog == "ns-train" and len(seg) > 1:
        return "ns-train", seg[1], flags_of(seg[2:])
    if prog == "make":
        return "make", " ".join(a for a in seg[1:] if "=" not in a and not a.startswith("-")), []
    return "skip", prog, []


CASES = []
for doc in DOCS:
    for where, lines in (("", bash_commands(doc)), ("inline ", inline_commands(doc))):
        for line in lines:
            for seg in segments(line):
                kind, target, flags = classify(seg)
                if kind != "skip":
                    CASES.append(pytest.param(kind, target, flags, id=f"{doc.name}:{where}{' '.join(seg)[:70]}"))


def _help_flags(text: str) -> Set[str]:
    """Flags named in the option column of a tyro --help screen."""
    flags = set()
    for line in text.splitlines():
        # a long help is laid out in two columns of boxes (a group of nested options lands in the right one): read
        # each box's part of the line
        for cell in line.split("│") if "│" in line else [line]:
            match = OPTION_LINE_RE.match(cell)  # an option's first line; its description's lines are indented further
            if match:
                spec = re.split(r"\s{2,}", match.group(1), maxsplit=1)[0]
                flags.update(FLAG_RE.findall(spec))
    return flags


@functools.lru_cache(maxsize=None)
def _help_procs() -> Dict[str, subprocess.Popen]:
    """Start every needed --help at once (they are independent), read them on demand."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    modules = sorted({c.values[1] for c in CASES if c.values[0] == "module"})
    code = "import sys; from {} import entrypoint; sys.argv[0] = 'prog'; entrypoint()"
    return {
        m: subprocess.Popen(
            [sys.executable, "-c", code.format(m), "--help"],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for m in modules
    }


@functools.lru_cache(maxsize=None)
def help_flags(module: str) -> Set[str]:
    out, _ = _help_procs()[module].communicate(timeout=120)
    flags = _help_flags(out)
    assert "--help" in flags or "-h" in out, f"{module} --help printed no options:\n{out[-2000:]}"
    return flags


@functools.lru_cache(maxsize=None)
def method_fields() -> Dict[str, Dict[str, bool]]:
    """For each ns-train method: which dotted flags of the docs name a config field."""
    wanted = {c.values[1]: [] for c in CASES if c.values[0] == "ns-train"}
    for c in CASES:
        if c.values[0] == "ns-train":
            wanted[c.values[1]] += c.values[2]
    code = r"""
import importlib, json, sys
specs, wanted = json.loads(sys.argv[1]), json.loads(sys.argv[2])
out = {}
for method, flags in wanted.items():
    if method not in specs:
        continue
    mod, attr = specs[method].split(":")
    cfg = getattr(importlib.import_module(mod), attr).config
    res = {}
    for flag in flags:
        obj, ok = cfg, True
        for part in flag[2:].replace("-", "_").split("."):
            if not hasattr(obj, part):
                ok = False
                break
            obj = getattr(obj, part)
        res[flag] = ok
    out[method] = res
print("RESULT" + json.dumps(out))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(METHODS), json.dumps(wanted)],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=180,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT") :])


def make_targets() -> Set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([\w.-]+)\s*:(?!=)", text, re.M)}


def test_docs_have_commands():
    kinds = {c.values[0] for c in CASES}
    assert {"module", "ns-train", "make"} <= kinds, kinds
    inline = [c for c in CASES if ":inline " in c.id]
    assert {c.id.split(":")[0] for c in inline} >= {"benchmarks.md", "development.md"}, [c.id for c in inline]


def test_commands_are_in_bash_blocks():
    """A command in a fenced block of another kind (```, ```sh, ```console) would not be checked: commands go in
    ```bash blocks."""
    misplaced = []
    for doc in DOCS:
        for lang, lines in fenced_blocks(doc):
            if lang == "bash":
                continue
            for line in lines:
                words = line.split()
                if words and words[0].lstrip("$").strip() in set(SCRIPTS) | {"ns-train"}:
                    misplaced.append(f"{doc.name} ```{lang}: {line.strip()}")
    assert not misplaced, misplaced


def test_inline_commands_are_read_from_prose_only():
    import tempfile

    text = (
        "Run `instance-loc --edits FILE` or `instance-synth\n--preset demo` (a span over a line break); `ls -l` is\n"
        "not checked.\n\n```\ninstance-render --in-a-plain-block\n```\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        doc = Path(tmp) / "doc.md"
        doc.write_text(text)
        assert inline_commands(doc) == ["instance-loc --edits FILE", "instance-synth --preset demo"]
        assert fenced_blocks(doc) == [("", ["instance-render --in-a-plain-block"])]


@pytest.mark.parametrize("kind,target,flags", CASES)
def test_command_flags_exist(kind: str, target: str, flags: List[str]):
    if kind == "module":
        known = help_flags(target) | GLOBAL_FLAGS
        missing = [f for f in flags if f not in known]
        assert not missing, f"{target} has no {missing}"
    elif kind == "ns-train":
        assert target in METHODS, f"ns-train has no method {target!r} (known: {sorted(METHODS)})"
        fields = method_fields()[target]
        missing = [f for f in flags if not fields.get(f)]
        assert not missing, f"ns-train {target} config has no field for {missing}"
    elif kind == "make":
        missing = [t for t in target.split() if t not in make_targets()]
        assert not missing, f"Makefile has no target {missing}"
    elif kind == "script":
        path = ROOT / target.removeprefix("./")
        assert path.is_file(), f"{target} does not exist"
        source = path.read_text()
        missing = [f for f in flags if f not in source]
        assert not missing, f"{target} does not mention {missing}"


def test_help_parser_sees_nested_and_negated_flags():
    text = (
        "│ --output PATH            Output folder (required)\n"
        "│ --map-depth, --no-map-depth\n"
        "│                          --images: not an option of its own\n"
        "│ --register.top-k INT     Training images retrieved per photo\n"
    )
    assert _help_flags(text) == {"--output", "--map-depth", "--no-map-depth", "--register.top-k"}
