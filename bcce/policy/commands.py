"""Command allowlist: parse a shell command string without running it, then allow or deny it.

Prefix matching on the raw string is broken, so the string is parsed the way bash would parse it
and every sub-command is checked on its words (``argv``). The parser is deliberately small: it
understands exactly the syntax an allowlisted command needs and denies everything else.

Parsing (:func:`parse_command`)
  * Sub-commands are split on ``&&``, ``||``, ``;`` and ``|`` outside quotes. An empty sub-command
    (``ls ;; ls``, a leading or trailing operator) is unparsable.
  * Words follow POSIX quoting: ``'...'`` is literal; ``"..."`` is literal except that ``\\``
    escapes ``$ ` " \\``; an unquoted ``\\x`` is a literal ``x``. Quotes are removed, so ``l''s``
    is the word ``ls``: that is exactly what bash runs, and matching is on that word, so quoting
    can neither smuggle in another command nor dodge a check. Unbalanced quotes are unparsable.
  * Control, format and separator characters are denied anywhere, even inside quotes (NUL,
    newline, CR, U+0085, U+2028/2029, zero-width and bidi controls, non-breaking spaces ...):
    they end commands in some shells and hide text from the people reading logs and approvals.
    TAB is the one exception: it is an ordinary blank, parsed exactly as bash parses it.
  * Outside single quotes these are denied (``cmd.metachar``): ``$`` in any form (``$VAR``,
    ``$IFS``, ``${``, ``$(``, ``$[``, ``$'...'``), backticks, ``<`` and ``>`` (every redirection,
    here-documents, ``<(`` / ``>(``), a lone ``&`` (background, ``&>``, ``|&``), ``(`` and ``)``,
    and ``#`` starting a word (a comment hides the rest from the shell but not from us).
  * Unquoted expansion characters are denied (``cmd.expansion``): globs ``* ? [``, braces
    ``{ }``, ``~`` at the start of a word or after ``=`` or ``:`` (tilde expansion) and ``=`` at the
    start of a word (zsh's ``=cmd``). Expansion produces words nobody saw: a file named
    ``--pre=./x`` turns ``rg foo *`` into ``rg foo --pre=./x``. Quote them to mean them literally.

Checking (:meth:`CommandAllowlist.check`), per sub-command, first failure wins
  ``cmd.env_prefix``     ``NAME=value cmd`` changes the environment of an allowed command.
  ``cmd.path_qualified`` ``/bin/ls``, ``./x``: the allowlist names commands, not files.
  ``cmd.wrapper``        commands that run other commands (``env``, ``xargs``, shells, ``sudo``,
                         ``timeout``, ``npx``, pagers and editors with shell escapes ...).
                         These are never allowed; an allowlist entry naming one is a ConfigError.
  ``cmd.shell_state``    ``cd``, ``export``, ``alias`` ...: later sub-commands would run in a
                         directory or environment the checker cannot see ("cd then write").
  ``cmd.not_allowlisted`` no entry matches. An entry is a command name (any arguments) or a name
                         plus leading words the command must start with (``git status``).
  ``cmd.dangerous_option`` an allowed tool used with an option that runs commands, writes files
                         or loads code (:data:`DANGEROUS_OPTIONS`). An option written out in the
                         matching entry itself (``python -c``, ``sed -i``) is the
                         administrator's explicit choice and is not flagged.
Anything unexpected inside ``check`` is a deny (``cmd.internal_error``): it fails closed.

Build and test runners (``pytest``, ``npm test``, ``make``) run code from the workspace by design;
the allowlist cannot contain that, the sandbox layer does.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from bcce.errors import ConfigError, PolicyDenied
from bcce.policy.decision import Decision

MAX_COMMAND_LENGTH: Final = 64 * 1024


class CommandParseError(PolicyDenied):
    """A command string that is unparsable or uses shell syntax the allowlist does not accept."""

    def __init__(self, message: str, *, rule: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.rule = rule


@dataclass(frozen=True)
class SimpleCommand:
    """One sub-command: its words after quote removal, its source text, and the operator
    (``&&``, ``||``, ``;`` or ``|``) joining it to the next one (None for the last)."""

    argv: tuple[str, ...]
    text: str
    operator: str | None = None


def render_commands(commands: Sequence[SimpleCommand]) -> str:
    """A shell command line that runs exactly ``commands``: every word single-quoted.

    Executing this instead of the original text means the shell sees only the words the
    allowlist checked, joined by the operators it checked, whatever quirks the original had.
    """
    parts = []
    for command in commands:
        parts.append(" ".join(shlex.quote(word) for word in command.argv))
        if command.operator:
            parts.append(command.operator)
    return " ".join(parts)


# --------------------------------------------------------------------------------------------
# Parsing

_LITERAL_HINT = "write literal arguments; wrap text in single quotes if it is meant literally"
_INVISIBLE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})


def _unparsable(message: str) -> CommandParseError:
    return CommandParseError(message, rule="cmd.unparsable", hint=_LITERAL_HINT)


def _metachar(message: str) -> CommandParseError:
    return CommandParseError(message, rule="cmd.metachar", hint=_LITERAL_HINT)


def _expansion(message: str) -> CommandParseError:
    return CommandParseError(
        message,
        rule="cmd.expansion",
        hint="list paths explicitly, or quote the character to mean it literally",
    )


def _reject_invisible(command: str) -> None:
    for offset, char in enumerate(command):
        if char == "\t":
            continue
        category = unicodedata.category(char)
        if category in _INVISIBLE_CATEGORIES or (category == "Zs" and char != " "):
            name = unicodedata.name(char, "control character")
            raise CommandParseError(
                f"control or invisible character U+{ord(char):04X} ({name}) at offset {offset}",
                rule="cmd.control_char",
                hint="send one command per line, with plain spaces between words",
            )


def _dollar(command: str, index: int) -> CommandParseError:
    follower = command[index + 1 : index + 2]
    what = {
        "(": "command substitution `$(`",
        "{": "parameter expansion `${`",
        "[": "arithmetic expansion `$[`",
        "'": "ANSI-C quoting `$'...'`",
        '"': 'locale quoting `$"..."`',
    }.get(follower)
    if what is None:
        name = re.match(r"[A-Za-z_][A-Za-z0-9_]*|.?", command[index + 1 :])
        token = name.group(0) if name else ""
        what = f"variable expansion `${token}`"
    return _metachar(f"{what} is not allowed")


# One pass over the command: builds words and splits sub-commands on operators.
class _Lexer:
    def __init__(self, command: str) -> None:
        self.src = command
        self.pos = 0
        self.commands: list[SimpleCommand] = []
        self.words: list[str] = []
        self.chars: list[str] = []
        self.in_word = False
        self.last_plain: str | None = None  # previous unquoted char of this word, for `~`
        self.start = 0

    def run(self) -> list[SimpleCommand]:
        src = self.src
        while self.pos < len(src):
            char = src[self.pos]
            if char in " \t":
                self.end_word()
                self.pos += 1
            elif char == "'":
                self.single_quoted()
            elif char == '"':
                self.double_quoted()
            elif char == "\\":
                if self.pos + 1 >= len(src):
                    raise _unparsable("the command ends with a lone backslash")
                self.append(src[self.pos + 1], plain=False)
                self.pos += 2
            elif char in ";|&":
                self.operator(char)
            else:
                self.check_plain(char)
                self.append(char, plain=True)
                self.pos += 1
        self.end_word()
        if not self.words:
            if self.commands:
                raise _unparsable("the command ends with an operator")
            raise _unparsable("the command is empty")
        self.commands.append(SimpleCommand(tuple(self.words), src[self.start :].strip()))
        return self.commands

    def append(self, char: str, *, plain: bool) -> None:
        self.chars.append(char)
        self.in_word = True
        self.last_plain = char if plain else None

    def end_word(self) -> None:
        if self.in_word:
            self.words.append("".join(self.chars))
        self.chars = []
        self.in_word = False
        self.last_plain = None

    def single_quoted(self) -> None:
        close = self.src.find("'", self.pos + 1)
        if close < 0:
            raise _unparsable("unbalanced single quote")
        for char in self.src[self.pos + 1 : close]:
            self.append(char, plain=False)
        self.in_word = True
        self.pos = close + 1

    def double_quoted(self) -> None:
        src = self.src
        index = self.pos + 1
        while True:
            if index >= len(src):
                raise _unparsable("unbalanced double quote")
            char = src[index]
            if char == '"':
                break
            if char == "\\" and index + 1 < len(src) and src[index + 1] in '$`"\\':
                self.append(src[index + 1], plain=False)
                index += 2
                continue
            if char == "$":
                raise _dollar(src, index)
            if char == "`":
                raise _metachar("command substitution with backticks is not allowed")
            self.append(char, plain=False)
            index += 1
        self.in_word = True
        self.pos = index + 1

    def operator(self, char: str) -> None:
        src = self.src
        begin = self.pos
        following = src[begin + 1 : begin + 2]
        if char == "&":
            if following != "&":
                raise _metachar("`&` (background job or `&>` redirection) is not allowed")
            self.pos += 2
        elif char == "|" and following == "|":
            self.pos += 2
        else:
            self.pos += 1
        self.end_word()
        if not self.words:
            raise _unparsable(f"empty command before `{src[begin : self.pos]}`")
        self.commands.append(
            SimpleCommand(tuple(self.words), src[self.start : begin].strip(), src[begin : self.pos])
        )
        self.words = []
        self.start = self.pos

    def check_plain(self, char: str) -> None:
        if char == "$":
            raise _dollar(self.src, self.pos)
        if char == "`":
            raise _metachar("command substitution with backticks is not allowed")
        if char in "<>":
            raise _metachar(f"redirection `{char}` is not allowed")
        if char in "()":
            raise _metachar(f"subshells and substitutions (`{char}`) are not allowed")
        if char == "#" and not self.in_word:
            raise _metachar("comments (`#` starting a word) are not allowed")
        if char in "*?[":
            raise _expansion(f"unquoted glob character `{char}` is not allowed")
        if char in "{}":
            raise _expansion(f"unquoted brace `{char}` is not allowed")
        if char == "~" and (not self.in_word or self.last_plain in ("=", ":")):
            raise _expansion("unquoted `~` (tilde expansion) is not allowed")
        if char == "=" and not self.in_word:
            raise _expansion("a word starting with unquoted `=` (zsh `=cmd` expansion)")


def parse_command(command: str) -> list[SimpleCommand]:
    """Split ``command`` into simple commands, each with its words after quote removal.

    Raises :class:`CommandParseError` (with ``rule``) for anything the allowlist does not accept.
    """
    if len(command) > MAX_COMMAND_LENGTH:
        raise _unparsable(f"the command is longer than {MAX_COMMAND_LENGTH} characters")
    _reject_invisible(command)
    return _Lexer(command).run()


# --------------------------------------------------------------------------------------------
# Command names that are never allowed


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _named(reason: str, *names: str) -> dict[str, str]:
    return dict.fromkeys(names, reason)


WRAPPERS: Final[Mapping[str, str]] = {
    **_named(
        "runs another command",
        *_words("""
        env xargs timeout nice ionice nohup exec command builtin time stdbuf setsid chroot
        unshare nsenter watch parallel flock taskset chrt prlimit setpriv fakeroot strace ltrace
        valgrind script busybox toybox bwrap firejail systemd-run at batch entr expect socat
        xdg-open
        """),
    ),
    **_named("runs a command as another user", *_words("sudo su doas pkexec runuser sg newgrp")),
    **_named(
        "is a shell",
        *_words("sh bash zsh dash ksh mksh csh tcsh fish ash yash rbash pwsh"),
    ),
    **_named("evaluates shell code", "eval", "source", "."),
    **_named("runs commands on another host", "ssh", "rsh"),
    **_named("downloads and runs a package", *_words("npx pnpx bunx uvx pipx")),
    **_named(
        "is an interactive program with a shell escape",
        *_words("""
        less more most man vi vim nvim view vimdiff ex ed emacs nano pico gdb lldb tmux screen
        """),
    ),
}
"""Commands that run other commands: never allowed, whatever the allowlist says."""

SHELL_STATE: Final[Mapping[str, str]] = _named(
    "changes the shell's directory or state, which later commands would inherit unchecked",
    *_words("""
    cd pushd popd export set unset alias unalias declare typeset local readonly shopt enable
    hash ulimit umask trap setopt unsetopt bind complete
    """),
)
"""Builtins that change the directory or environment later sub-commands run in."""

_ASSIGNMENT: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")


def _command_name_problem(name: str) -> tuple[str, str] | None:
    if _ASSIGNMENT.match(name):
        return "cmd.env_prefix", f"environment assignment `{name}` before a command"
    if "/" in name:
        return "cmd.path_qualified", f"`{name}` is a path; name the command without a directory"
    if name in WRAPPERS:
        return "cmd.wrapper", f"`{name}` {WRAPPERS[name]}"
    if name in SHELL_STATE:
        return "cmd.shell_state", f"`{name}` {SHELL_STATE[name]}"
    return None


# --------------------------------------------------------------------------------------------
# Dangerous options of allowed tools


@dataclass(frozen=True)
class Finding:
    """A dangerous argument: its index in ``argv`` and why it is dangerous."""

    index: int
    reason: str


Analyzer = Callable[[Sequence[str], int], list[Finding]]
"""Custom check: ``(argv, first)`` where ``argv[first:]`` are the arguments to inspect."""


@dataclass(frozen=True)
class ToolOptions:
    """The dangerous options of one tool (or of one subcommand of it).

    ``long`` names match ``--name``, ``--name=value`` and every abbreviation ``--na`` of them
    (GNU getopt, git, pip and npm accept unambiguous prefixes; treating ambiguous ones as
    dangerous too is the safe side). ``short`` letters match anywhere in a ``-abc`` cluster.
    ``words`` match an argument exactly (``find -exec``). Options are looked for in every
    argument, including after ``--``: a false alarm is a deny, never an escape.

    With ``subcommands`` set, the tool has subcommands (``git log``): every option before the
    subcommand must be in ``safe_global`` (``long``/``short`` then only name the reason), the
    subcommand's own table applies after it, and the ``"*"`` table applies to every subcommand.
    """

    long: Mapping[str, str] = field(default_factory=dict)
    short: Mapping[str, str] = field(default_factory=dict)
    words: Mapping[str, str] = field(default_factory=dict)
    check: Analyzer | None = None
    subcommands: Mapping[str, ToolOptions] | None = None
    safe_global: frozenset[str] = frozenset()
    denied_subcommands: Mapping[str, str] = field(default_factory=dict)
    old_style_first_arg: bool = False  # tar's `tar xvf`: the first argument is a letter cluster


def _option_reason(spec: ToolOptions, word: str, *, first_arg: bool = False) -> str | None:
    if word in spec.words:
        return spec.words[word]
    if first_arg and spec.old_style_first_arg and word and not word.startswith("-"):
        cluster = word
    elif word.startswith("--") and len(word) > 2:
        name = word[2:].partition("=")[0]
        for long_name, reason in spec.long.items():
            if long_name.startswith(name):
                return reason
        return None
    elif word.startswith("-") and len(word) > 1:
        cluster = word[1:]
    else:
        return None
    for letter in cluster:
        if letter in spec.short:
            return spec.short[letter]
    return None


def scan_options(spec: ToolOptions, argv: Sequence[str], first: int) -> list[Finding]:
    """Apply ``spec`` to ``argv[first:]``, the arguments of the tool at ``argv[first - 1]``."""
    findings: list[Finding] = []
    if spec.subcommands is None:
        for index in range(first, len(argv)):
            reason = _option_reason(spec, argv[index], first_arg=index == first)
            if reason is not None:
                findings.append(Finding(index, reason))
    else:
        index = first
        while index < len(argv) and argv[index].startswith("-") and argv[index] != "-":
            word = argv[index]
            if word not in spec.safe_global:
                reason = _option_reason(spec, word) or f"`{word}` before the subcommand is unknown"
                findings.append(Finding(index, reason))
            index += 1
        if index < len(argv):
            sub = argv[index]
            if sub in spec.denied_subcommands:
                findings.append(Finding(index, spec.denied_subcommands[sub]))
            for key in ("*", sub):
                sub_spec = spec.subcommands.get(key)
                if sub_spec is not None:
                    findings.extend(scan_options(sub_spec, argv, index + 1))
    if spec.check is not None:
        findings.extend(spec.check(argv, first))
    return findings


# The full name of a GNU long option word, or None when it is unknown or ambiguous.
def _long_option(word: str, known: Sequence[str]) -> str | None:
    name = word[2:].partition("=")[0]
    if name in known:
        return name
    candidates = [option for option in known if option.startswith(name)]
    return candidates[0] if len(candidates) == 1 else None


# sed: GNU semantics. The script is parsed with a whitelist of harmless commands; anything the
# parser does not understand is dangerous, so a gap in it fails closed.

_SED_LONG: Final = _words("""
    expression file in-place line-length null-data zero-terminated quiet silent
    regexp-extended separate sandbox unbuffered binary follow-symlinks posix debug help version
    """)
_SED_FLAGS: Final = "nErsuzb"


def _sed_check(argv: Sequence[str], first: int) -> list[Finding]:
    findings: list[Finding] = []
    scripts: list[tuple[int, str]] = []
    operands: list[int] = []
    script_given = False
    index = first
    while index < len(argv):
        word = argv[index]
        if word == "--":
            operands.extend(range(index + 1, len(argv)))
            break
        if word.startswith("--"):
            option = _long_option(word, _SED_LONG)
            if option is None:
                findings.append(Finding(index, f"sed option `{word}` is unknown or ambiguous"))
            elif option == "expression":
                value, index = _option_value(argv, index, word)
                scripts.append((index, value))
                script_given = True
            elif option == "file":
                findings.append(Finding(index, "reads the sed script from a file"))
            elif option == "in-place":
                findings.append(Finding(index, "edits files in place"))
            elif option == "line-length" and "=" not in word:
                index += 1
        elif word.startswith("-") and word != "-":
            for position, letter in enumerate(word[1:], start=2):
                rest = word[position:]
                if letter in _SED_FLAGS:
                    continue
                if letter == "e":
                    value, index = (rest, index) if rest else _next_value(argv, index)
                    scripts.append((index, value))
                    script_given = True
                elif letter == "f":
                    findings.append(Finding(index, "reads the sed script from a file"))
                elif letter == "i":
                    findings.append(Finding(index, "edits files in place"))
                elif letter == "l":
                    index += 0 if rest else 1
                else:
                    findings.append(Finding(index, f"sed option `-{letter}` is unknown"))
                break
        else:
            operands.append(index)
        index += 1
    if not script_given and operands:
        scripts.append((operands[0], argv[operands[0]]))
    for script_index, script in scripts:
        problem = sed_script_problem(script)
        if problem is not None:
            findings.append(Finding(script_index, problem))
    return findings


def _option_value(argv: Sequence[str], index: int, word: str) -> tuple[str, int]:
    _, equals, value = word.partition("=")
    return (value, index) if equals else _next_value(argv, index)


def _next_value(argv: Sequence[str], index: int) -> tuple[str, int]:
    return (argv[index + 1], index + 1) if index + 1 < len(argv) else ("", index)


def sed_script_problem(script: str) -> str | None:
    """Why a GNU sed script is dangerous or not understood, or None for a harmless one."""
    text = script
    size = len(text)

    def blanks(i: int) -> int:
        while i < size and text[i] in " \t":
            i += 1
        return i

    def digits(i: int) -> int:
        while i < size and text[i].isdigit():
            i += 1
        return i

    # The index after the closing delimiter of a part starting at i, or -1.
    def delimited(i: int, delimiter: str) -> int:
        while i < size:
            if text[i] == "\\":
                i += 2
            elif text[i] == delimiter:
                return i + 1
            else:
                i += 1
        return -1

    def regex_address(i: int) -> int:
        if text[i] == "\\":
            if i + 1 >= size or text[i + 1] in "\\\n":
                return -1
            i += 1
        end = delimited(i + 1, text[i])
        while 0 <= end < size and text[end] in "IM":
            end += 1
        return end

    def address(i: int) -> int:
        if i >= size:
            return i
        if text[i].isdigit():
            i = digits(i)
            return digits(i + 1) if i < size and text[i] == "~" else i
        if text[i] == "$":
            return i + 1
        if text[i] in "/\\":
            return regex_address(i)
        return i

    def label(i: int) -> int:
        i = blanks(i)
        while i < size and text[i] not in "; \t":
            i += 1
        return i

    i = 0
    while True:
        while i < size and text[i] in " \t;":
            i += 1
        if i >= size or text[i] == "#":
            return None
        end = address(i)
        if end < 0:
            return "malformed sed address"
        if end > i:
            i = blanks(end)
            if i < size and text[i] == ",":
                i = blanks(i + 1)
                end = digits(i + 1) if i < size and text[i] in "+~" else address(i)
                if end <= i:
                    return "malformed sed address"
                i = end
        i = blanks(i)
        while i < size and text[i] == "!":
            i = blanks(i + 1)
        if i >= size:
            return "sed address without a command"
        command = text[i]
        i += 1
        if command == "{":
            continue
        if command in "}=dDgGhHnNpPxzF":
            pass
        elif command in "lqQ":
            i = digits(blanks(i))
        elif command in "btT":
            i = label(i)
        elif command == ":":
            start = blanks(i)
            i = label(i)
            if i == start:
                return "sed label without a name"
        elif command in "aic":
            return None  # GNU one-liner: the rest of the script is literal text
        elif command in "sy":
            if i >= size or text[i] in "\\\n":
                return f"malformed sed `{command}` command"
            delimiter = text[i]
            i = delimited(i + 1, delimiter)
            i = delimited(i, delimiter) if i >= 0 else -1
            if i < 0:
                return f"unterminated sed `{command}` command"
            while command == "s" and i < size and (text[i] in "gpiImM" or text[i].isdigit()):
                i += 1
            if command == "s" and i < size and text[i] == "e":
                return "the sed s///e flag runs the result as a shell command"
            if command == "s" and i < size and text[i] == "w":
                return "the sed s///w flag writes to a file"
        elif command == "e":
            return "the sed `e` command runs a shell command"
        elif command in "wW":
            return "the sed `w` command writes to a file"
        elif command in "rR":
            return "the sed `r` command reads another file"
        else:
            return f"sed command `{command}` is not understood"
        i = blanks(i)
        if i < size and text[i] not in ";}#":
            return f"unexpected text after sed command `{command}`"


# awk: the program may not call system(), read from or write to commands or files, or load code.
# Comparisons with `>` are denied with redirections (swap the operands and use `<`).

_AWK_RISKY: Final = ("system", "getline", "|", ">", "@")
_AWK_SAFE_LETTERS: Final = "bcCghMNnOPrsStV"
_AWK_SAFE_LONG: Final = _words("""
    characters-as-bytes traditional copyright gen-pot help bignum use-lc-numeric
    non-decimal-data optimize posix re-interval no-optimize sandbox lint-old version csv
    field-separator assign source
    """)
_AWK_LONG: Final = (
    *_AWK_SAFE_LONG,
    *_words("file exec include load dump-variables debug lint pretty-print profile"),
)


def _awk_check(argv: Sequence[str], first: int) -> list[Finding]:
    findings: list[Finding] = []
    programs: list[tuple[int, str]] = []
    operands: list[int] = []
    index = first
    while index < len(argv):
        word = argv[index]
        if word.startswith("--") and len(word) > 2:
            option = _long_option(word, _AWK_LONG)
            if option not in _AWK_SAFE_LONG:
                findings.append(Finding(index, f"awk option `{word}` runs or writes code"))
            elif option in ("field-separator", "assign", "source"):
                value, index = _option_value(argv, index, word)
                if option == "source":
                    programs.append((index, value))
        elif word.startswith("-") and word not in ("-", "--"):
            for position, letter in enumerate(word[1:], start=2):
                if letter in _AWK_SAFE_LETTERS:
                    continue
                if letter in "Fve":
                    rest = word[position:]
                    value, index = (rest, index) if rest else _next_value(argv, index)
                    if letter == "e":
                        programs.append((index, value))
                else:
                    findings.append(Finding(index, f"awk option `-{letter}` runs or writes code"))
                break
        elif word != "--":
            operands.append(index)
        index += 1
    if not programs and operands:
        programs.append((operands[0], argv[operands[0]]))
    for program_index, program in programs:
        token = next((token for token in _AWK_RISKY if token in program), None)
        if token is not None:
            findings.append(
                Finding(program_index, f"the awk program uses `{token}` (commands, files or code)")
            )
    return findings


# python: interpreter options end at the script, `-m module` or `-c`; everything after belongs
# to the program (`python -m pytest -c setup.cfg` is pytest's -c).


def _python_check(argv: Sequence[str], first: int) -> list[Finding]:
    index = first
    while index < len(argv):
        word = argv[index]
        if word == "-":
            return [Finding(index, "reads the Python program from standard input")]
        if word == "--" or not word.startswith("-"):
            return []
        if word.startswith("--"):
            index += 2 if word == "--check-hash-based-pycs" else 1
            continue
        for position, letter in enumerate(word[1:], start=2):
            if letter == "c":
                return [Finding(index, "runs Python code given on the command line (-c)")]
            if letter == "m":
                module, module_index = (
                    (word[position:], index) if word[position:] else _next_value(argv, index)
                )
                if module == "pip":
                    return scan_options(_PIP, argv, module_index + 1)
                return []
            if letter in "WX":
                index += 0 if word[position:] else 1
                break
        index += 1
    return []


def _git_config_check(argv: Sequence[str], first: int) -> list[Finding]:
    arguments = argv[first:]
    if not arguments:
        return []
    for offset, word in enumerate(arguments):
        if word.partition("=")[0] in _GIT_CONFIG_WRITES:
            return [Finding(first + offset, "git config may only read settings")]
    if not any(word in _GIT_CONFIG_READS for word in arguments):
        return [Finding(first, "git config may only read settings (--get, --list)")]
    return []


_GIT_CONFIG_READS: Final = frozenset(
    {"--get", "--get-all", "--get-regexp", "--get-urlmatch", "-l", "--list", "get", "list"}
)
_GIT_CONFIG_WRITES: Final = frozenset(
    _words("""
    --add --unset --unset-all --replace-all --rename-section --remove-section -e --edit set
    unset edit rename-section remove-section
    """)
)

_URL_SOURCE: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://|(git|hg|svn|bzr)\+|file:")


def _pip_sources(argv: Sequence[str], first: int) -> list[Finding]:
    return [
        Finding(index, f"installs from a URL or VCS (`{argv[index]}`)")
        for index in range(first, len(argv))
        if not argv[index].startswith("-") and _URL_SOURCE.match(argv[index])
    ]


_RUNS = "runs another command"
_WRITES = "writes a file outside the edit tools' path scope and budget"
_PACKAGE_RUNNER = "downloads or runs arbitrary packages"
_PIP_INDEX = "installs from another index, URL or requirements file"
_PIP_INSTALL = ToolOptions(
    long=dict.fromkeys(
        _words(
            "index-url extra-index-url find-links trusted-host requirement constraint src root "
            "target prefix"
        ),
        _PIP_INDEX,
    ),
    short=dict.fromkeys("ifrct", _PIP_INDEX),
    check=_pip_sources,
)
_PIP = ToolOptions(
    subcommands={"install": _PIP_INSTALL, "download": _PIP_INSTALL, "wheel": _PIP_INSTALL},
    safe_global=frozenset(
        _words("""
        -q -v -V -h --quiet --verbose --version --help --no-color --no-cache-dir
        --disable-pip-version-check --isolated --no-input --require-virtualenv
        """)
    ),
    denied_subcommands={"config": "changes pip's configuration"},
)
_NODE_PACKAGE_MANAGER = ToolOptions(
    subcommands={
        "*": ToolOptions(
            long=dict.fromkeys(
                ("script-shell", "node-options", "userconfig", "globalconfig", "call"), _RUNS
            )
        )
    },
    safe_global=frozenset({"--version", "-v", "--help", "-h"}),
    denied_subcommands=_named(
        _PACKAGE_RUNNER, "exec", "x", "explore", "init", "create", "innit", "dlx"
    ),
)
_GIT_UPLOAD = ToolOptions(long={"upload-pack": _RUNS}, short={"u": _RUNS})
_GIT_SAFE_GLOBAL = """
    --no-pager -P -p --paginate --bare --literal-pathspecs --glob-pathspecs --noglob-pathspecs
    --icase-pathspecs --no-replace-objects --no-optional-locks --no-advice --version --help -h
    --html-path --man-path --info-path
"""
_GIT_RUNNING_SUBCOMMANDS = """
    filter-branch daemon instaweb shell upload-pack receive-pack upload-archive send-email
    remote-ext remote-fd web--browse
"""
_GIT_CREDENTIAL_SUBCOMMANDS = "credential credential-store credential-cache"
_TAR_RUNNING = """
    to-command checkpoint-action use-compress-program info-script new-volume-script
    rsh-command rmt-command
"""
_GIT_REPOSITORY = (
    "makes git use another repository or configuration, whose settings can run commands"
)

DANGEROUS_OPTIONS: Final[Mapping[str, ToolOptions]] = {
    "find": ToolOptions(
        words={
            **_named(_RUNS, "-exec", "-execdir", "-ok", "-okdir"),
            "-delete": "deletes files",
            **_named(_WRITES, "-fprint", "-fprint0", "-fprintf", "-fls"),
        }
    ),
    "rg": ToolOptions(
        long={"pre": "runs a preprocessor command on every file", "hostname-bin": _RUNS}
    ),
    "sed": ToolOptions(check=_sed_check),
    "awk": ToolOptions(check=_awk_check),
    "python": ToolOptions(check=_python_check),
    "node": ToolOptions(
        long=dict.fromkeys(("eval", "print"), "runs code given on the command line"),
        short=dict.fromkeys("ep", "runs code given on the command line"),
        words={"-": "reads the program from standard input"},
    ),
    "perl": ToolOptions(
        short={
            **dict.fromkeys("eEMm", "runs code given on the command line"),
            "i": "edits files in place",
        },
        words={"-": "reads the program from standard input"},
    ),
    "ruby": ToolOptions(
        short={"e": "runs code given on the command line", "i": "edits files in place"},
        words={"-": "reads the program from standard input"},
    ),
    "php": ToolOptions(short={"r": "runs code given on the command line"}),
    "git": ToolOptions(
        safe_global=frozenset(_GIT_SAFE_GLOBAL.split()),
        long={
            "exec-path": "runs git programs from another directory",
            **dict.fromkeys(("git-dir", "work-tree", "config-env"), _GIT_REPOSITORY),
        },
        short={"c": "sets git configuration, which can run commands", "C": _GIT_REPOSITORY},
        subcommands={
            "*": ToolOptions(long={"output": _WRITES}),
            "fetch": _GIT_UPLOAD,
            "pull": _GIT_UPLOAD,
            "ls-remote": _GIT_UPLOAD,
            "clone": ToolOptions(
                long={"upload-pack": _RUNS, "config": _GIT_REPOSITORY, "template": _RUNS},
                short={"u": _RUNS, "c": _GIT_REPOSITORY},
            ),
            "push": ToolOptions(long=dict.fromkeys(("receive-pack", "exec"), _RUNS)),
            "archive": ToolOptions(long={"exec": _RUNS}),
            "rebase": ToolOptions(long={"exec": _RUNS}, short={"x": _RUNS}),
            "difftool": ToolOptions(long={"extcmd": _RUNS}, short={"x": _RUNS}),
            "grep": ToolOptions(long={"open-files-in-pager": _RUNS}, short={"O": _RUNS}),
            "format-patch": ToolOptions(long={"output-directory": _WRITES}, short={"o": _WRITES}),
            "submodule": ToolOptions(words={"foreach": _RUNS}),
            "bisect": ToolOptions(words={"run": _RUNS}),
            "config": ToolOptions(check=_git_config_check),
        },
        denied_subcommands={
            **_named(_RUNS, *_GIT_RUNNING_SUBCOMMANDS.split()),
            **_named("reveals stored credentials", *_GIT_CREDENTIAL_SUBCOMMANDS.split()),
        },
    ),
    "tar": ToolOptions(
        long={**dict.fromkeys(_TAR_RUNNING.split(), _RUNS), "absolute-names": _WRITES},
        short={"I": _RUNS, "F": _RUNS, "P": _WRITES},
        old_style_first_arg=True,
    ),
    "sort": ToolOptions(long={"compress-program": _RUNS, "output": _WRITES}, short={"o": _WRITES}),
    "rsync": ToolOptions(long=dict.fromkeys(("rsh", "rsync-path"), _RUNS), short={"e": _RUNS}),
    "pip": _PIP,
    "npm": _NODE_PACKAGE_MANAGER,
    "pnpm": _NODE_PACKAGE_MANAGER,
    "yarn": _NODE_PACKAGE_MANAGER,
}
"""Dangerous options per tool, keyed by the tool's canonical name (see :func:`tool_name`).

To cover another tool, add a :class:`ToolOptions` here: options that run commands, write files
outside the edit tools, or load code. Prefer a whitelist ``check`` when the tool takes a script.
"""

_TOOL_ALIASES: Final = (
    (re.compile(r"python[0-9.]*|pypy[0-9.]*"), "python"),
    (re.compile(r"pip[0-9.]*"), "pip"),
    (re.compile(r"g?awk|mawk|nawk"), "awk"),
    (re.compile(r"nodejs|node"), "node"),
    (re.compile(r"perl[0-9.]*"), "perl"),
    (re.compile(r"ruby[0-9.]*"), "ruby"),
    (re.compile(r"php[0-9.]*"), "php"),
    (re.compile(r"gsed"), "sed"),
    (re.compile(r"gtar|bsdtar"), "tar"),
)


def tool_name(name: str) -> str:
    """The key of :data:`DANGEROUS_OPTIONS` for a command name (``python3.12`` -> ``python``)."""
    for pattern, canonical in _TOOL_ALIASES:
        if pattern.fullmatch(name):
            return canonical
    return name


def dangerous_options(argv: Sequence[str]) -> list[Finding]:
    """Every dangerous argument of ``argv`` according to :data:`DANGEROUS_OPTIONS`."""
    spec = DANGEROUS_OPTIONS.get(tool_name(argv[0]))
    return [] if spec is None else scan_options(spec, argv, 1)


# --------------------------------------------------------------------------------------------
# The allowlist


def _display(words: Sequence[str]) -> str:
    return " ".join(words)


class CommandAllowlist:
    """Allows a command string only if every sub-command is allowlisted and used safely."""

    def __init__(self, entries: Sequence[str]) -> None:
        parsed: list[tuple[str, ...]] = []
        for position, entry in enumerate(entries):
            key = f"cmd_allowlist[{position}]"
            try:
                commands = parse_command(entry)
            except CommandParseError as exc:
                raise ConfigError(
                    f"command allowlist entry {entry!r} is not a plain command: {exc.message}",
                    key=key,
                    hint="an entry is a command name, optionally followed by fixed arguments",
                ) from exc
            if len(commands) != 1:
                raise ConfigError(
                    f"command allowlist entry {entry!r} must be one command, without operators",
                    key=key,
                    hint="list each command as its own entry",
                )
            words = commands[0].argv
            problem = _command_name_problem(words[0])
            if problem is not None:
                raise ConfigError(
                    f"command allowlist entry {entry!r} cannot be allowed: {problem[1]}",
                    key=key,
                    hint="allowlist the commands themselves, by name",
                )
            parsed.append(words)
        self._entries = tuple(dict.fromkeys(parsed))

    @property
    def entries(self) -> tuple[tuple[str, ...], ...]:
        """The parsed entries, each as its words."""
        return self._entries

    def check(self, command: str) -> Decision:
        """Allow or deny ``command``. Never raises: an internal error is a deny."""
        try:
            return self._check(command)
        except Exception as exc:  # noqa: BLE001 - fail closed: a checker bug must deny
            return Decision.deny(
                "cmd.internal_error",
                f"the command could not be checked ({type(exc).__name__}); denied",
            )

    def _check(self, command: str) -> Decision:
        value: object = command
        if not isinstance(value, str):
            return Decision.deny("cmd.unparsable", "the command is not a string")
        try:
            commands = parse_command(command)
        except CommandParseError as exc:
            return Decision.deny(exc.rule, exc.message)
        for simple in commands:
            denial = self._check_simple(simple)
            if denial is not None:
                return denial
        names = ", ".join(f"`{_display(simple.argv[:1])}`" for simple in commands)
        return Decision.allow("cmd.allowlisted", f"allowlisted: {names}")

    def _check_simple(self, simple: SimpleCommand) -> Decision | None:
        argv = simple.argv
        name = argv[0]
        problem = _command_name_problem(name)
        if problem is not None:
            rule, reason = problem
            return Decision.deny(rule, f"{reason} (in `{simple.text}`)")
        forms = [entry for entry in self._entries if entry[0] == name]
        if not forms:
            return Decision.deny("cmd.not_allowlisted", f"`{name}` is not in the command allowlist")
        findings = dangerous_options(argv)
        matching = sorted(
            (entry for entry in forms if tuple(argv[: len(entry)]) == entry), key=len, reverse=True
        )
        if not matching:
            if findings:
                return _dangerous(simple, findings[0])
            allowed = "; ".join(f"`{_display(entry)}`" for entry in forms)
            return Decision.deny(
                "cmd.not_allowlisted",
                f"`{simple.text}` does not match an allowlisted form of `{name}` ({allowed})",
            )
        first_unwaived: Finding | None = None
        for entry in matching:
            # An option the entry itself spells out is the administrator's explicit choice.
            unwaived = [finding for finding in findings if finding.index >= len(entry)]
            if not unwaived:
                return None
            first_unwaived = first_unwaived or unwaived[0]
        assert first_unwaived is not None
        return _dangerous(simple, first_unwaived)


def _dangerous(simple: SimpleCommand, finding: Finding) -> Decision:
    word = simple.argv[finding.index]
    return Decision.deny(
        "cmd.dangerous_option",
        f"`{word}` in `{simple.text}`: {finding.reason}",
    )


__all__ = [
    "DANGEROUS_OPTIONS",
    "MAX_COMMAND_LENGTH",
    "SHELL_STATE",
    "WRAPPERS",
    "CommandAllowlist",
    "CommandParseError",
    "Finding",
    "SimpleCommand",
    "ToolOptions",
    "dangerous_options",
    "parse_command",
    "scan_options",
    "sed_script_problem",
    "tool_name",
]
