"""A structural check of the shipped MQL5 source (no MQL5 compiler exists here).

What it does, in order:

1. **Preprocessing** (documented, so its blind spots are known): ``//`` and ``/* */``
   comments are removed; string and character literals become one token each (their
   text is kept for the checks that look for reason codes); ``#include`` lines are
   dropped; ``#define NAME value`` lines are recorded (macros are expanded when a check
   looks at flags) and removed. Line numbers are kept for the messages.
2. **A small parser** over the tokens: class bodies, function and method definitions
   (their names and bodies), declarations of members and locals with their types, and
   every call site ``Name(...)`` / ``object.Method(...)`` with its argument count
   (commas at nesting depth zero).
3. **Checks**: every call resolves — to a function or method defined in the checked
   files, or to an MQL5 API function / standard-library method in the checked-in list
   ``tests/bridge/mql5_signatures.txt`` (taken from the MQL5 reference) with an
   argument count the signature allows; every upper-case constant is defined or listed;
   and the properties issue 14 asks for (see :func:`check_properties`).

What it cannot see: types of expressions, overload resolution beyond argument
counts, implicit conversions, template instantiation, anything MetaEditor reports as a
warning. Those need MetaEditor (see docs/file-bridge.md, "First run on a real terminal").

Run: ``python tests/bridge/mql5_check.py [FILE.mqh FILE.mq5]`` (default: the shipped
files); exit status 1 and one line per problem when something fails.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
MQL5_DIR = HERE.parents[1] / "src" / "fokha_integration" / "bridge" / "mql5"
INCLUDE = MQL5_DIR / "FokhaBridge.mqh"
EXAMPLE = MQL5_DIR / "FokhaBridgeExample.mq5"
SIGNATURES = HERE / "mql5_signatures.txt"

_TYPES = "void bool char uchar short ushort int uint long ulong double float string datetime color"
TYPE_WORDS = frozenset(_TYPES.split(" "))
KEYWORDS = TYPE_WORDS | frozenset(
    [
        "if",
        "else",
        "for",
        "while",
        "do",
        "switch",
        "case",
        "default",
        "return",
        "break",
        "continue",
        "sizeof",
        "new",
        "delete",
        "class",
        "struct",
        "public",
        "private",
        "protected",
        "virtual",
        "const",
        "static",
        "input",
        "template",
        "typename",
        "this",
        "true",
        "false",
        "NULL",
        "operator",
        "enum",
    ]
)

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      |(?P<str>"(?:[^"\\\n]|\\.)*")
      |(?P<chr>'(?:[^'\\\n]|\\.)*')
      |(?P<num>0[xX][0-9A-Fa-f]+|\d+\.\d*(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
      |(?P<id>[A-Za-z_][A-Za-z0-9_]*)
      |(?P<op>::|->|<<=|>>=|<<|>>|&&|\|\||[=!<>+\-*/%&|^]=|\+\+|--|[{}()\[\];,.?:~!<>=+\-*/%&|^\\#])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True, slots=True)
class Token:
    """One token: its kind (id, num, str, chr, op), text and source line."""

    kind: str
    text: str
    line: int


@dataclass(frozen=True, slots=True)
class Call:
    """A call site: ``receiver.name(...)`` (receiver empty for a plain call)."""

    name: str
    receiver: str
    args: int
    line: int
    function: str
    index: int


@dataclass(slots=True)
class Source:
    """One preprocessed file: tokens, macros, functions and their bodies, calls."""

    path: Path
    tokens: list[Token]
    macros: dict[str, str]
    functions: dict[str, tuple[int, int]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Signature:
    """An API entry: how many arguments it takes (``max_args`` None: variadic)."""

    name: str
    min_args: int
    max_args: int | None


# ---------------------------------------------------------------------------
# 1. Preprocessing


def _strip_comments(text: str) -> str:
    out = []
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def preprocess(path: Path, text: str | None = None) -> Source:
    """Comments out, directives recorded and removed, the rest tokenized."""
    raw = path.read_text(encoding="utf-8") if text is None else text
    lines = _strip_comments(raw).split("\n")
    macros: dict[str, str] = {}
    tokens: list[Token] = []
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            m = re.match(r"#define\s+([A-Za-z_]\w*)\s*(.*)$", stripped)
            if m:
                macros[m.group(1)] = m.group(2).strip()
            continue
        pos = 0
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            if m is None:
                raise SyntaxError(f"{path.name}:{number}: cannot tokenize {line[pos : pos + 20]!r}")
            pos = m.end()
            kind = m.lastgroup
            assert kind is not None
            if kind != "ws":
                tokens.append(Token(kind, m.group(), number))
    return Source(path, tokens, macros)


# ---------------------------------------------------------------------------
# 2. Parsing


def _match(tokens: list[Token], i: int, open_: str, close: str) -> int:
    """Index of the token closing the bracket at ``i``."""
    depth = 0
    for j in range(i, len(tokens)):
        if tokens[j].text == open_:
            depth += 1
        elif tokens[j].text == close:
            depth -= 1
            if depth == 0:
                return j
    raise SyntaxError(f"unbalanced {open_!r} at line {tokens[i].line}")


def _match_back(tokens: list[Token], i: int, open_: str, close: str) -> int:
    depth = 0
    for j in range(i, -1, -1):
        if tokens[j].text == close:
            depth += 1
        elif tokens[j].text == open_:
            depth -= 1
            if depth == 0:
                return j
    raise SyntaxError(f"unbalanced {close!r} at line {tokens[i].line}")


def _count_args(tokens: list[Token], open_i: int, close_i: int) -> int:
    if close_i == open_i + 1:
        return 0
    depth = 0
    count = 1
    for t in tokens[open_i + 1 : close_i]:
        if t.text in "([{":
            depth += 1
        elif t.text in ")]}":
            depth -= 1
        elif t.text == "," and depth == 0:
            count += 1
    return count


def _definition_name(tokens: list[Token], brace: int) -> str | None:
    """The function name when the ``{`` at ``brace`` opens a function body, else None."""
    j = brace - 1
    while j >= 0 and tokens[j].text == "const":
        j -= 1
    if j < 0 or tokens[j].text != ")":
        return None
    while True:
        open_i = _match_back(tokens, j, "(", ")")
        name_i = open_i - 1
        if name_i < 0 or tokens[name_i].kind != "id":
            return None
        before = tokens[name_i - 1].text if name_i > 0 else ""
        if before in (",", ":"):
            # a constructor's initializer list: step back over it to the parameter list
            k = name_i - 1
            while k >= 0 and tokens[k].text != ":":
                k -= 1
            j = k - 1
            if j < 0 or tokens[j].text != ")":
                return None
            continue
        if tokens[name_i].text in KEYWORDS:
            return None
        if before == "::" and name_i >= 2:
            return f"{tokens[name_i - 2].text}::{tokens[name_i].text}"
        return tokens[name_i].text


def parse(src: Source) -> Source:
    """Find classes, functions, declarations and calls in ``src``."""
    toks = src.tokens
    class_stack: list[tuple[str, int]] = []  # (class name, index of its closing brace)
    current: list[tuple[str, int]] = []  # (function name, index of its closing brace)
    i = 0
    while i < len(toks):
        t = toks[i]
        while class_stack and i > class_stack[-1][1]:
            class_stack.pop()
        while current and i > current[-1][1]:
            current.pop()
        if t.text in ("class", "struct") and i + 1 < len(toks) and toks[i + 1].kind == "id":
            j = i + 2
            while j < len(toks) and toks[j].text not in ("{", ";"):
                j += 1
            if j < len(toks) and toks[j].text == "{":
                class_stack.append((toks[i + 1].text, _match(toks, j, "{", "}")))
        if t.text == "{":
            name = _definition_name(toks, i)
            if name is not None:
                if "::" not in name and class_stack:
                    name = f"{class_stack[-1][0]}::{name}"
                end = _match(toks, i, "{", "}")
                src.functions[name] = (i, end)
                current.append((name, end))
        if t.kind == "id" and i + 1 < len(toks):
            nxt = toks[i + 1].text
            prev = toks[i - 1] if i > 0 else Token("op", "", 0)
            # declarations: "Type name;" / "Type name[...]" / "Type<..> name" / "Type &name"
            if (
                nxt in (";", "[", "=", ",", ")")
                and prev.kind == "id"
                and prev.text
                not in (
                    "return",
                    "else",
                    "case",
                )
            ):
                src.variables.setdefault(t.text, prev.text)
            elif nxt in (";", "[", "=", ",", ")") and prev.text in (">", "&"):
                k = i - 1
                while k >= 0 and toks[k].text in ("&", "*"):
                    k -= 1
                if toks[k].text == ">":
                    k = _match_back(toks, k, "<", ">") - 1
                if k >= 0 and toks[k].kind == "id":
                    src.variables.setdefault(t.text, toks[k].text)
            in_init_list = bool(class_stack) and not current and prev.text in (":", ",")
            if nxt == "(" and t.text not in KEYWORDS and not in_init_list:
                is_decl = (prev.kind == "id" and prev.text not in ("return", "else", "case")) or (
                    prev.text in ("&", "*", "~")
                    and i >= 2
                    and toks[i - 2].kind == "id"
                    and toks[i - 2].text in TYPE_WORDS
                )
                if prev.text == "::" or prev.text == "~":
                    is_decl = True
                close = _match(toks, i + 1, "(", ")")
                if not is_decl:
                    receiver = ""
                    if prev.text in (".", "->") and i >= 2:
                        receiver = toks[i - 2].text
                        if receiver == "]":
                            receiver = toks[_match_back(toks, i - 2, "[", "]") - 1].text
                    fn = current[-1][0] if current else ""
                    src.calls.append(
                        Call(t.text, receiver, _count_args(toks, i + 1, close), t.line, fn, i)
                    )
        i += 1
    return src


def load_signatures(path: Path = SIGNATURES) -> tuple[dict[str, list[Signature]], set[str]]:
    """The checked-in API list: ``name -> [Signature]`` and the set of constants."""
    sigs: dict[str, list[Signature]] = {}
    consts: set[str] = set()
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("const "):
            consts.update(line[len("const ") :].split())
            continue
        m = re.match(r"^.*?([A-Za-z_][\w:]*)\s*\((.*)\)\s*(const)?$", line)
        if m is None:
            raise ValueError(f"bad signature line: {raw!r}")
        name, params = m.group(1), m.group(2).strip()
        if params in ("", "void"):
            sig = Signature(name, 0, 0)
        else:
            parts = [p.strip() for p in params.split(",")]
            variadic = parts[-1] == "..."
            if variadic:
                parts = parts[:-1]
            required = sum(1 for p in parts if "=" not in p)
            sig = Signature(name, required, None if variadic else len(parts))
        sigs.setdefault(name, []).append(sig)
    return sigs, consts


# ---------------------------------------------------------------------------
# 3. Checks


def _allowed(sigs: list[Signature], args: int) -> bool:
    return any(s.min_args <= args and (s.max_args is None or args <= s.max_args) for s in sigs)


def _expand(text: str, macros: dict[str, str], depth: int = 0) -> str:
    if depth > 5:
        return text
    return re.sub(
        r"[A-Za-z_]\w*",
        lambda m: (
            _expand(macros[m.group()], macros, depth + 1) if m.group() in macros else m.group()
        ),
        text,
    )


def _args_text(src: Source, call: Call) -> list[str]:
    toks = src.tokens
    close = _match(toks, call.index + 1, "(", ")")
    args: list[str] = []
    depth = 0
    cur: list[str] = []
    for t in toks[call.index + 2 : close]:
        if t.text in "([{":
            depth += 1
        elif t.text in ")]}":
            depth -= 1
        if t.text == "," and depth == 0:
            args.append(" ".join(cur))
            cur = []
        else:
            cur.append(t.text)
    if cur:
        args.append(" ".join(cur))
    return args


def check_api(
    sources: list[Source], sigs: dict[str, list[Signature]], consts: set[str]
) -> list[str]:
    """Every call resolves to a definition or to a listed API signature; constants exist."""
    problems = []
    defined: dict[str, str] = {}
    for src in sources:
        for fn in src.functions:
            defined[fn.split("::")[-1]] = fn
    variables: dict[str, str] = {}
    macros: dict[str, str] = {}
    for src in sources:
        variables.update(src.variables)
        macros.update(src.macros)
    classes = {fn.split("::")[0] for src in sources for fn in src.functions if "::" in fn}
    for src in sources:
        for call in src.calls:
            where = f"{src.path.name}:{call.line}"
            if call.receiver:
                rtype = variables.get(call.receiver, "")
                if rtype in classes or call.receiver == "this":
                    if call.name not in defined:
                        problems.append(f"{where}: {call.receiver}.{call.name}() is not defined")
                    continue
                key = f"{rtype}::{call.name}"
                if key not in sigs:
                    problems.append(
                        f"{where}: {call.receiver}.{call.name}() ({rtype}) not in the API list"
                    )
                elif not _allowed(sigs[key], call.args):
                    problems.append(f"{where}: {key} called with {call.args} arguments")
                continue
            if call.name in defined or call.name in classes or call.name in macros:
                continue
            if call.name not in sigs:
                problems.append(
                    f"{where}: {call.name}() is neither defined here nor in the API list"
                )
            elif not _allowed(sigs[call.name], call.args):
                problems.append(f"{where}: {call.name}() called with {call.args} arguments")
        for t in src.tokens:
            if (
                t.kind == "id"
                and re.fullmatch(r"[A-Z][A-Z0-9]*_[A-Z0-9_]+", t.text)
                and t.text not in macros
                and t.text not in consts
            ):
                problems.append(
                    f"{src.path.name}:{t.line}: constant {t.text} is not in the API list"
                )
    return problems


def _calls_in(src: Source, function: str, name: str) -> list[Call]:
    return [c for c in src.calls if c.function == function and c.name == name]


def _statement_start(src: Source, index: int) -> bool:
    """Whether the call at ``index`` is a statement of its own (its result ignored)."""
    prev = src.tokens[index - 1].text if index > 0 else ";"
    return prev in (";", "{", "}", "else", ")")


def _reachable(src: Source, start: str) -> set[str]:
    short = {fn.split("::")[-1]: fn for fn in src.functions}
    seen = {start}
    todo = [start]
    while todo:
        fn = todo.pop()
        for c in src.calls:
            if c.function == fn and not c.receiver and c.name in short:
                target = short[c.name]
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
    return seen


def check_properties(inc: Source, ex: Source) -> list[str]:
    """The properties issue 14 asks of the include and the example, checked on the tokens."""
    problems: list[str] = []
    both = (inc, ex)
    # Journal opens (and every other open) share the file: doctor/stats/an editor may read it.
    for src in both:
        for c in src.calls:
            if c.name != "FileOpen" or c.receiver:
                continue
            args = _args_text(src, c)
            flags = _expand(args[1] if len(args) > 1 else "", src.macros | inc.macros)
            where = f"{src.path.name}:{c.line}"
            if "FILE_SHARE_READ" not in flags:
                problems.append(f"{where}: FileOpen without FILE_SHARE_READ")
            if (
                "journal" in args[0].lower()
                and "FILE_SHARE_WRITE" not in flags
                and "FILE_WRITE" in flags
            ):
                problems.append(f"{where}: journal FileOpen for writing without FILE_SHARE_WRITE")
            if "m_journal" in args[0] and not (
                "FILE_SHARE_READ" in flags and "FILE_SHARE_WRITE" in flags
            ):
                problems.append(f"{where}: journal FileOpen without both share flags")
    # Every journal append's result is used, and Process appends B before the handler.
    for src in both:
        for c in src.calls:
            if c.name in ("AppendJournal", "JournalEffect", "OnMessage") and _statement_start(
                src, c.index
            ):
                problems.append(f"{src.path.name}:{c.line}: the result of {c.name}() is ignored")
    process = "CFokhaBridge::Process"
    if process not in inc.functions:
        problems.append("CFokhaBridge::Process is missing")
    else:
        start, end = inc.functions[process]
        toks = inc.tokens
        handler = list(_calls_in(inc, process, "OnMessage"))
        begin = [
            c
            for c in _calls_in(inc, process, "AppendJournal")
            if toks[c.index - 1].text == "!"
            and toks[c.index - 2].text == "("
            and toks[c.index - 3].text == "if"
        ]
        if not handler:
            problems.append("Process does not call OnMessage")
        elif not begin or begin[0].index > handler[0].index:
            problems.append("Process calls OnMessage without a checked AppendJournal before it")
        else:
            close = _match(toks, begin[0].index + 1, "(", ")") + 1  # the if's ')'
            body_end = (
                _match(toks, close + 1, "{", "}") if toks[close + 1].text == "{" else close + 1
            )
            if not any(t.text == "return" for t in toks[close + 1 : body_end + 1]):
                problems.append(
                    "a failed AppendJournal in Process does not return before OnMessage"
                )
        strings = {t.text.strip('"') for t in toks[start:end] if t.kind == "str"}
        if "handler_error" not in strings:
            problems.append("Process never sends anything to bad/ as handler_error")
    # No locale-order compare, no blocking sleep, no FileLoad (reads are shared and sized).
    for src in both:
        for c in src.calls:
            where = f"{src.path.name}:{c.line}"
            if c.name == "StringCompare":
                problems.append(f"{where}: StringCompare (locale order) used; names sort by bytes")
            if c.name == "Sleep":
                problems.append(f"{where}: Sleep() blocks the timer")
            if c.name == "FileLoad":
                problems.append(f"{where}: FileLoad reads without a share flag or size check")
    # MathSrand: one call site, in Init, guarded so it runs once per program.
    srand = [c for src in both for c in src.calls if c.name == "MathSrand"]
    if len(srand) != 1:
        problems.append(f"MathSrand called from {len(srand)} places, expected exactly one")
    elif srand[0].function != "CFokhaBridge::Init":
        problems.append(f"MathSrand called in {srand[0].function}, expected CFokhaBridge::Init")
    # cur/ is reconciled from OnTimer once the trade server is ready, never from Init.
    if "CFokhaBridge::ReconcileCur" in _reachable(inc, "CFokhaBridge::Init"):
        problems.append("Init reaches ReconcileCur: cur/ must wait for the trade server")
    ready = inc.functions.get("CFokhaBridge::TradeServerReady")
    if ready is None or not any(
        t.text == "TERMINAL_CONNECTED" for t in inc.tokens[ready[0] : ready[1]]
    ):
        problems.append("TradeServerReady does not check TERMINAL_CONNECTED")
    for fn in _reachable(inc, "CFokhaBridge::OnTimer"):
        for c in _calls_in(inc, fn, "Sleep"):
            problems.append(f"{fn} (reached from OnTimer) calls Sleep at line {c.line}")
    # Order of calls inside single functions: what must come before what.
    ordered = [
        ("CFokhaBridge::CheckFrame", "FokhaUtf8Valid", "Parse", "UTF-8 is checked before JSON"),
        (
            "CFokhaBridge::ReadFrame",
            "FileSize",
            "FileReadArray",
            "the size is checked before reading",
        ),
        (
            "CFokhaBridge::Process",
            "TradeServerReady",
            "OnMessage",
            "an in-doubt id waits for the trade server before the handler",
        ),
        ("CFokhaBridge::Init", "LoadJournal", "RecoverTmp", "the journal is loaded first"),
    ]
    for fn, first, then, why in ordered:
        a = [c.index for c in inc.calls if c.function == fn and c.name == first]
        b = [c.index for c in inc.calls if c.function == fn and c.name == then]
        if not a or not b or a[0] > b[0]:
            problems.append(f"{fn}: {first} must come before {then} ({why})")
    init = inc.functions.get("CFokhaBridge::Init")
    if init is not None:
        text = " ".join(t.text for t in inc.tokens[init[0] : init[1]])
        if "if ( ! LoadJournal ( ) ) {" not in text:
            problems.append("Init does not stop when the journal cannot be read")
    # FILE_REWRITE only where overwriting is intended (spec section 8).
    allowed = {
        "CFokhaBridge::RecoverTmp",
        "CFokhaBridge::RetryMoves",
        "CFokhaBridge::ToBad",
        "CFokhaBridge::CompactJournal",
    }
    for fn, (start, end) in inc.functions.items():
        if fn not in allowed and any(t.text == "FILE_REWRITE" for t in inc.tokens[start:end]):
            problems.append(f"{fn} moves with FILE_REWRITE")
    # The example: orders are sent only after a journaled intent; no comment-cut ids.
    # Each trade request follows its own journaled intent: between the last JournalEffect /
    # EffectOf call before it and the request, no other request statement.
    trade = ("Buy", "Sell", "PositionClose")
    for fn in ex.functions:
        sends = [
            c for c in ex.calls if c.function == fn and c.receiver == "g_trade" and c.name in trade
        ]
        anchors = [
            c.index
            for c in ex.calls
            if c.function == fn and c.name in ("JournalEffect", "EffectOf")
        ]
        for send in sends:
            before = [a for a in anchors if a < send.index]
            if not before:
                problems.append(f"{fn} sends a trade request before a JournalEffect record")
                continue
            for other in sends:
                between = before[-1] < other.index < send.index
                if between and any(t.text == ";" for t in ex.tokens[other.index : send.index]):
                    problems.append(
                        f"{fn}: trade request at line {send.line} is not preceded by its own"
                        " JournalEffect record (another request comes between)"
                    )
    for c in ex.calls:
        if c.name == "StringSubstr" and "msg . id" in " ".join(_args_text(ex, c)[:1]):
            problems.append(f"{ex.path.name}:{c.line}: the order comment is cut from the id")
    return problems


def check(
    include: Path = INCLUDE,
    example: Path = EXAMPLE,
    *,
    include_text: str | None = None,
    example_text: str | None = None,
) -> list[str]:
    """All problems found in the include and the example (empty: the check passes)."""
    inc = parse(preprocess(include, include_text))
    ex = parse(preprocess(example, example_text))
    sigs, consts = load_signatures()
    return check_api([inc, ex], sigs, consts) + check_properties(inc, ex)


def main(argv: list[str]) -> int:
    """Command line: print the problems, exit 1 if there are any."""
    files = [Path(a) for a in argv[1:]] or [INCLUDE, EXAMPLE]
    problems = check(*files[:2])
    for p in problems:
        print(p)
    print(f"mql5 check: {len(problems)} problem(s)", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
