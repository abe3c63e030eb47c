"""Redacting secrets: the one choke point every log line, artifact and event passes through.

A :class:`Redactor` replaces two kinds of secret with a placeholder (``***``):

* **Known values** (:meth:`Redactor.add_secret`), matched literally together with their JSON-escaped
  forms, URL-encoded forms (``quote``, ``quote`` with nothing safe, ``quote_plus``; upper- and
  lower-case hex), base64 forms (standard and urlsafe, padded or not) and the three
  alignment-shifted base64 fragments a value leaves when it is embedded in a longer base64 string
  (an HTTP Basic header, an encoded credentials file). A fragment holds only the characters that
  encode the value's bits alone, so at most two characters either side stay visible; fragments
  shorter than 8 characters are not used, as random base64 text would contain them.
* **Patterns**: :data:`BUILTIN_PATTERNS` (AWS access key ids, labelled AWS secret access keys and
  session tokens, Anthropic API keys, ``Bearer`` tokens, PEM private key blocks, GitHub and Slack
  tokens, Slack webhook URLs, passwords in URLs) and configured extra regular expressions. Where a
  pattern has a group named ``secret`` only that group is replaced, so the label stays readable
  (``aws_secret_access_key=***``, ``https://user:***@host``).

Policies:

* Values shorter than :data:`MIN_SECRET_LENGTH` (4) characters are ignored: redacting ``"1"`` or
  ``"abc"`` everywhere would destroy every log line while the placeholders gave the value away. A
  value with surrounding whitespace (read from a file) is registered as given and stripped.
* Overlapping matches are merged and their union replaced once: the longest extent wins and no
  fragment of either secret survives. Adjacent (touching) matches get a placeholder each.
* One pass: a value that contains the placeholder could re-form around a placeholder in contrived
  text; that is not guarded against.

Performance: the literal forms of all values are compiled into one trie-shaped regular expression,
rebuilt lazily on first use after a secret was added; text in which neither it nor any pattern
finds anything comes back as the same object. The patterns are searched one by one, not as one
alternation: each starts with a literal that the re module skips ahead to, whereas an alternation
is tried at every position and was measured 3 to 9 times slower (``benchmarks/redaction.py``).

:class:`StreamRedactor` (command output arriving in chunks) holds back only what could still become
a match: the shortest tail that is an unfinished prefix of a known value's form (so at most the
longest form's length - 1 characters), the unfinished last line (at most ``tail`` characters), and
a pattern match still open at the end of the buffer, such as a PEM block whose END has not arrived
(at most ``max_pending`` characters). Guarantee: the concatenated output equals ``redact`` of the
whole text whenever every pattern match lies within one line or already matches before its line
ends (true of every built-in pattern), no match is longer than ``max_pending``, no not-yet-matching
start of one is longer than ``tail``, lookbehinds reach back at most 64 characters, and no pattern
anchors at the end of the text (``$``, ``\\Z``).
"""

from __future__ import annotations

import base64
import bisect
import json
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

from bcce.errors import ConfigError

MIN_SECRET_LENGTH = 4
"""Values shorter than this are not registered as secrets (see the module docstring)."""

DEFAULT_PLACEHOLDER = "***"

_MIN_FRAGMENT_LENGTH = 8
_CONTEXT = 64  # characters of already emitted stream text kept for lookbehinds and \b
_LABEL_SEPARATOR = r"""(?:\\?["'])?[ \t]*[:=]>?[ \t]*(?:\\?["'])?"""

BUILTIN_PATTERNS: dict[str, str] = {
    # Each starts with a literal (or a few) so the re module can skip ahead to candidates; labels
    # are spelled lower, Capitalised or UPPER per word instead of (?i), which would defeat that.
    "aws-access-key-id": (
        r"A(?<![A-Z0-9]A)(?:KIA|SIA|BIA|CCA|IDA|ROA|IPA|NPA|NVA|PKA|GPA)[A-Z0-9]{16}(?![A-Z0-9])"
    ),
    "aws-secret-access-key": (
        r"(?:secret|Secret|SECRET)[_-]?(?:access|Access|ACCESS)[_-]?(?:key|Key|KEY)"
        + _LABEL_SEPARATOR
        + r"(?P<secret>[A-Za-z0-9/+=]{16,})"
    ),
    "aws-session-token": (
        r"(?:session|Session|SESSION|security|Security|SECURITY)[_-]?(?:token|Token|TOKEN)"
        + _LABEL_SEPARATOR
        + r"(?P<secret>[A-Za-z0-9/+=%]{16,})"
    ),
    "anthropic-api-key": r"sk-ant-[A-Za-z0-9_-]{8,}",
    "bearer-token": r"(?:Bearer|bearer|BEARER)[ \t]+(?P<secret>[A-Za-z0-9._~+/-]{16,}=*)",
    # An unterminated block (truncated output, or a stream whose END has not arrived yet) is
    # redacted up to the first character that cannot be part of one.
    "private-key": (
        r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[A-Za-z0-9+/=:,.\s\\]|-(?!----END))*"
        r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----)?"
    ),
    "github-token": r"(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
    "slack-token": r"xox[bpars]-[A-Za-z0-9-]{10,}",
    "slack-webhook": (
        r"hooks\.slack\.com/(?:services|workflows|triggers)/(?P<secret>[A-Za-z0-9_/]+)"
    ),
    # From "://" rather than the scheme: a literal start is much faster, the scheme is not secret.
    "url-password": r"://[^\s/?#@:\"'<>]*:(?P<secret>[^\s/?#@\"'<>]+)@",
}
"""The patterns every :class:`Redactor` applies, by name."""

# Keys whose values are secrets whatever they look like: ``{"SecretAccessKey": "..."}`` is the JSON
# analogue of a labelled pattern, and the label is no longer in the same string as the value.
_SENSITIVE_KEY = re.compile(
    r"(?:aws)?(?:secretaccesskey|secretkey|sessiontoken|securitytoken)|xamzsecuritytoken"
    r"|password|passwd|passphrase|secret|clientsecret|privatekey|apikey|xapikey|apitoken"
    r"|token|accesstoken|refreshtoken|idtoken|authtoken|bearertoken"
    r"|authorization|proxyauthorization|cookie|setcookie"
)
_NOT_ALNUM = re.compile(r"[^a-z0-9]")
_PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")


class Redactor:
    """Replaces known secret values and credential patterns with a placeholder.

    Thread-safe: secrets may be added while other threads redact.
    """

    def __init__(
        self,
        secrets: Iterable[str] = (),
        patterns: Iterable[str] = (),
        *,
        placeholder: str = DEFAULT_PLACEHOLDER,
    ) -> None:
        """Register ``secrets`` and compile ``patterns`` (Python regular expressions).

        Raises :class:`~bcce.errors.ConfigError` for a pattern that does not compile or matches
        the empty string.
        """
        self._placeholder = placeholder
        self._patterns = [_compile_builtin(source) for source in BUILTIN_PATTERNS.values()]
        self._patterns += [_compile_extra(source) for source in patterns]
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._state: _State | None = None
        for value in secrets:
            self.add_secret(value)

    @property
    def placeholder(self) -> str:
        return self._placeholder

    def add_secret(self, value: str) -> None:
        """Redact ``value`` and its encoded forms from now on (ignored if under 4 characters)."""
        candidates = {value, value.strip()}
        with self._lock:
            added = {c for c in candidates if len(c) >= MIN_SECRET_LENGTH} - self._secrets
            if added:
                self._secrets |= added
                self._state = None

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by the placeholder."""
        state = self._current()
        if not state.might_match(text, 0):
            return text
        secrets, _ = state.spans(text, 0)
        return _replace(text, 0, len(text), secrets, self._placeholder)

    def redact_bytes(self, data: bytes) -> bytes:
        """Like :meth:`redact`; bytes that are not UTF-8 pass through unchanged."""
        text = data.decode("utf-8", "surrogateescape")
        redacted = self.redact(text)
        return data if redacted is text else redacted.encode("utf-8", "surrogateescape")

    def redact_data(self, value: object) -> object:
        """A copy of ``value`` (JSON-like data) with every string redacted, keys included.

        Walks dicts, lists and tuples (tuples come back as plain tuples); strings and bytes are
        redacted, other values are returned as they are. Keys are redacted too, because a secret
        used as a key would otherwise leak; if two keys become equal, the later one gets a ``#2``
        suffix rather than overwriting the earlier. A non-empty string, bytes or number stored
        under a key that names a credential (``password``, ``token``, ``SecretAccessKey``,
        ``Authorization``, ...; case, ``_`` and ``-`` ignored), directly or in a list, is
        replaced whole.
        The data must not contain cycles.
        """
        return self._redact_value(value)

    def stream(self, *, tail: int = 1024, max_pending: int = 65536) -> StreamRedactor:
        """A redactor for text arriving in chunks (see :class:`StreamRedactor`)."""
        return StreamRedactor(self, tail=tail, max_pending=max_pending)

    def __repr__(self) -> str:
        # Never show the values: a repr ends up in logs and tracebacks.
        return f"<Redactor {len(self._secrets)} secrets, {len(self._patterns)} patterns>"

    def _redact_value(self, value: object) -> object:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, bytes):
            return self.redact_bytes(value)
        if isinstance(value, dict):
            result: dict[object, object] = {}
            for key, item in value.items():
                new_key = self._redact_value(key)
                if new_key in result:
                    suffix = 2
                    while f"{new_key}#{suffix}" in result:
                        suffix += 1
                    new_key = f"{new_key}#{suffix}"
                sensitive = isinstance(key, str) and _is_sensitive_key(key)
                result[new_key] = self._mask(item) if sensitive else self._redact_value(item)
            return result
        if isinstance(value, list):
            return [self._redact_value(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self._redact_value(item) for item in value)
        return value

    def _mask(self, value: object) -> object:
        if (
            isinstance(value, bool)
            or value is None
            or (isinstance(value, str | bytes) and not value)
        ):
            return value
        if isinstance(value, str | int | float):
            return self._placeholder
        if isinstance(value, bytes):
            return self._placeholder.encode()
        if isinstance(value, list | tuple):
            items = [self._mask(item) for item in value]
            return items if isinstance(value, list) else tuple(items)
        return self._redact_value(value)

    def _current(self) -> _State:
        state = self._state
        if state is None:
            with self._lock:
                if self._state is None:
                    self._state = _State.build(self._secrets, self._patterns)
                state = self._state
        return state


class StreamRedactor:
    """Redacts text that arrives in chunks, holding back what could still become a secret.

    ``feed`` returns the redacted text that is final so far, ``flush`` the rest; the outputs
    concatenated equal :meth:`Redactor.redact` of the whole text under the conditions in the module
    docstring. Feeding may go on after ``flush``, but a secret split across a flush is not caught.
    Not thread-safe: use one per stream.
    """

    def __init__(self, redactor: Redactor, *, tail: int = 1024, max_pending: int = 65536) -> None:
        if tail < 1 or max_pending < tail:
            raise ValueError("StreamRedactor needs 1 <= tail <= max_pending")
        self._redactor = redactor
        self._tail = tail
        self._max_pending = max_pending
        self._context = ""
        self._pending = ""

    @property
    def pending(self) -> int:
        """How many characters are held back."""
        return len(self._pending)

    def feed(self, chunk: str) -> str:
        """Take the next chunk; return the redacted text that no later chunk can change."""
        if not chunk:
            return ""
        self._pending += chunk
        return self._emit(final=False)

    def flush(self) -> str:
        """Return everything held back, redacted (at the end of the stream)."""
        return self._emit(final=True) if self._pending else ""

    def _emit(self, *, final: bool) -> str:
        state = self._redactor._current()
        window = self._context + self._pending
        start, end = len(self._context), len(window)
        cut = end if final else self._safe_cut(state, window, start)
        secrets: list[tuple[int, int]] = []
        if state.might_match(window, start):
            secrets, extents = state.spans(window, start)
            if not final:
                # A match reaching the cut may still grow (an optional END, more token): hold it.
                for low, high in reversed(extents):
                    if high < cut:
                        break
                    cut = min(cut, low)
                if cut == start and end - start > self._max_pending:
                    cut = self._forced_cut(state, window, start, secrets)
        if cut <= start:
            return ""
        out = _replace(window, start, cut, secrets, self._redactor.placeholder)
        self._context = window[max(0, cut - _CONTEXT) : cut]
        self._pending = window[cut:]
        return out

    def _forced_cut(
        self, state: _State, window: str, start: int, secrets: list[tuple[int, int]]
    ) -> int:
        # A match open for longer than max_pending: give up exactness, not memory. What is emitted
        # is still redacted up to the end of any secret it cuts into.
        end = len(window)
        low = max(start, end - state.longest + 1)
        cut = min(end - self._tail, state.unfinished_literal(window, low))
        for first, stop in secrets:
            if first < cut < stop:
                cut = stop
        return max(cut, start + 1)

    def _safe_cut(self, state: _State, window: str, start: int) -> int:
        end = len(window)
        newline = max(window.rfind("\n", start), window.rfind("\r", start))
        line_start = newline + 1 if newline >= 0 else start
        cut = max(line_start, end - self._tail)
        return min(cut, state.unfinished_literal(window, max(start, end - state.longest + 1)))


@dataclass(frozen=True, slots=True)
class _Pattern:
    pattern: re.Pattern[str]
    has_secret_group: bool


@dataclass(frozen=True, slots=True)
class _State:
    """Compiled matchers for one set of secrets: immutable, so readers need no lock."""

    literals: list[str]  # sorted
    first_chars: frozenset[str]
    longest: int
    literal_scan: re.Pattern[str] | None
    patterns: list[_Pattern]
    searches: tuple[Callable[[str, int], re.Match[str] | None], ...]

    @classmethod
    def build(cls, secrets: Iterable[str], patterns: list[_Pattern]) -> _State:
        forms: set[str] = set()
        for secret in secrets:
            forms |= _encoded_forms(secret)
        literals = sorted(forms)
        searches = [item.pattern.search for item in patterns]
        literal_scan = None
        if literals:
            trie = _trie_regex(literals)
            searches.insert(0, re.compile(trie).search)
            # A lookahead finds a literal at every position, so overlapping ones are all seen.
            literal_scan = re.compile(f"(?=({trie}))")
        return cls(
            literals=literals,
            first_chars=frozenset(word[0] for word in literals),
            longest=max(map(len, literals), default=0),
            literal_scan=literal_scan,
            patterns=patterns,
            searches=tuple(searches),
        )

    def might_match(self, text: str, pos: int) -> bool:
        return any(search(text, pos) is not None for search in self.searches)

    def spans(self, text: str, pos: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Merged spans to replace, and merged extents of whole matches, at or after ``pos``."""
        secrets: list[tuple[int, int]] = []
        extents: list[tuple[int, int]] = []
        if self.literal_scan is not None:
            for match in self.literal_scan.finditer(text, pos):
                span = (match.start(), match.end(1))
                secrets.append(span)
                extents.append(span)
        for item in self.patterns:
            for match in item.pattern.finditer(text, pos):
                if match.end() == match.start():
                    continue
                extents.append(match.span())
                span = match.span("secret") if item.has_secret_group else match.span()
                if span[1] > span[0]:
                    secrets.append(span)
        return _merge(secrets), _merge(extents)

    def unfinished_literal(self, text: str, low: int) -> int:
        """The first position from ``low`` where the rest of ``text`` is an unfinished literal."""
        literals, count = self.literals, len(self.literals)
        for position in range(low, len(text)):
            if text[position] not in self.first_chars:
                continue
            # A short probe first: slicing the whole rest at every position is quadratic.
            probe = text[position : position + 16]
            index = bisect.bisect_left(literals, probe)
            if index == count or not literals[index].startswith(probe):
                continue
            rest = text[position:] if len(probe) == 16 else probe
            # The first literal sorting after ``rest`` starts with it if any literal does.
            index = bisect.bisect_right(literals, rest, index)
            if index < count and literals[index].startswith(rest):
                return position
        return len(text)


def _compile_builtin(source: str) -> _Pattern:
    pattern = re.compile(source)
    return _Pattern(pattern, "secret" in pattern.groupindex)


def _compile_extra(source: str) -> _Pattern:
    hint = (
        "core.redact_patterns takes Python regular expressions (the re module); "
        "fix or remove this one"
    )
    try:
        pattern = re.compile(source)
    except re.error as exc:
        raise ConfigError(
            f"invalid redaction pattern {source!r}: {exc}", hint=hint, key="core.redact_patterns"
        ) from exc
    if pattern.fullmatch("") is not None:
        raise ConfigError(
            f"redaction pattern {source!r} matches the empty string",
            hint="a redaction pattern must match at least one character",
            key="core.redact_patterns",
        )
    return _Pattern(pattern, "secret" in pattern.groupindex)


def _encoded_forms(secret: str) -> set[str]:
    forms = {secret}
    for ensure_ascii in (True, False):
        escaped = json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1]
        forms |= {escaped, escaped.replace("/", "\\/")}
    for quoted in (quote(secret), quote(secret, safe=""), quote_plus(secret)):
        forms |= {quoted, _PERCENT_HEX.sub(lambda m: m.group().lower(), quoted)}
    raw = secret.encode("utf-8", "surrogatepass")
    encoders: tuple[Callable[[bytes], bytes], ...] = (base64.b64encode, base64.urlsafe_b64encode)
    for encode in encoders:
        whole = encode(raw).decode("ascii")
        forms |= {whole, whole.rstrip("=")}
        forms |= {
            fragment
            for shift in range(3)
            if len(fragment := _base64_fragment(encode, raw, shift)) >= _MIN_FRAGMENT_LENGTH
        }
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def _base64_fragment(encode: Callable[[bytes], bytes], raw: bytes, shift: int) -> str:
    """The characters encoding only ``raw``'s bits when it starts ``shift`` bytes into a group."""
    encoded = encode(bytes(shift) + raw).decode("ascii")
    first = (8 * shift + 5) // 6  # first 6-bit character wholly inside raw
    stop = (8 * shift + 8 * len(raw)) // 6
    return encoded[first:stop]


def _trie_regex(words: list[str]) -> str:
    """One expression matching any of ``words`` (sorted), preferring the longest at a position."""
    try:
        source = _trie(words, 0)
        re.compile(source)
    except RecursionError:
        # Thousands of nested prefixes: a flat alternation, longest first, is slower but works.
        source = "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))
    return source


def _trie(words: list[str], depth: int) -> str:
    terminal = len(words[0]) == depth
    rest = words[1:] if terminal else words
    if not rest:
        return ""
    branches: list[str] = []
    index = 0
    while index < len(rest):
        char = rest[index][depth]
        stop = index
        while stop < len(rest) and rest[stop][depth] == char:
            stop += 1
        group = rest[index:stop]
        first, last = group[0], group[-1]
        common = depth + 1
        while common < min(len(first), len(last)) and first[common] == last[common]:
            common += 1
        branches.append(re.escape(first[depth:common]) + _trie(group, common))
        index = stop
    body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
    # Greedy optional: a longer word sharing this prefix wins over the word ending here.
    return f"(?:{body})?" if terminal else body


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, with overlapping spans joined (touching ones are kept apart)."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(spans):
        if merged and low < merged[-1][1]:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


def _replace(text: str, start: int, stop: int, spans: list[tuple[int, int]], mark: str) -> str:
    pieces: list[str] = []
    position = start
    for low, high in spans:
        if low >= stop:
            break
        if high <= start:
            continue
        pieces += [text[position:low], mark]
        position = high
    pieces.append(text[position:stop])
    return "".join(pieces)


def _is_sensitive_key(key: str) -> bool:
    return _SENSITIVE_KEY.fullmatch(_NOT_ALNUM.sub("", key.lower())) is not None


__all__ = [
    "BUILTIN_PATTERNS",
    "DEFAULT_PLACEHOLDER",
    "MIN_SECRET_LENGTH",
    "Redactor",
    "StreamRedactor",
]
