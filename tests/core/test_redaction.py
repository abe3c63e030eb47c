"""Tests for bcce.core.redaction: known values and their encodings, patterns, data, streams."""

from __future__ import annotations

import base64
import itertools
import json
import re
import string
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bcce.core.redaction import BUILTIN_PATTERNS, MIN_SECRET_LENGTH, Redactor
from bcce.errors import ConfigError

SECRET = "s3cr3t/Value+with=chars&more"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.fixture
def redactor() -> Redactor:
    return Redactor([SECRET])


# --- known values ---------------------------------------------------------------------------


def test_known_value_is_replaced_by_the_placeholder(redactor: Redactor) -> None:
    assert redactor.redact(f"token={SECRET} end") == "token=*** end"


def test_every_occurrence_is_replaced(redactor: Redactor) -> None:
    assert redactor.redact(f"{SECRET}{SECRET} and {SECRET}") == "****** and ***"


def test_text_without_secrets_comes_back_as_the_same_object(redactor: Redactor) -> None:
    text = "nothing to see here: pytest -q tests/core\n"
    assert redactor.redact(text) is text


def test_placeholder_is_configurable() -> None:
    assert Redactor([SECRET], placeholder="[REDACTED]").redact(f"a {SECRET}") == "a [REDACTED]"


def test_secret_added_after_first_use_is_redacted(redactor: Redactor) -> None:
    redactor.redact("warm up the compiled state")
    redactor.add_secret("late-secret-value")
    assert redactor.redact("x late-secret-value y") == "x *** y"


@pytest.mark.parametrize("value", ["", "a", "ab", "abc"])
def test_values_shorter_than_the_minimum_are_ignored(value: str) -> None:
    redactor = Redactor([value])
    text = "a cab ran abc abcabc"
    assert redactor.redact(text) == text


def test_value_of_minimum_length_is_redacted() -> None:
    value = "x" * MIN_SECRET_LENGTH
    assert Redactor([value]).redact(f"<{value}>") == "<***>"


def test_value_read_with_a_trailing_newline_is_redacted_without_it() -> None:
    assert Redactor(["file-secret-1\n"]).redact("key file-secret-1 used") == "key *** used"


def test_whitespace_around_a_short_value_does_not_make_it_long_enough() -> None:
    redactor = Redactor(["  ab  "])
    assert redactor.redact("ab abc") == "ab abc"


def test_secret_with_regex_metacharacters_is_matched_literally() -> None:
    value = r"a.b*c+(d)[e]{2}|^$\z?"
    redactor = Redactor([value])
    assert redactor.redact(f"<{value}>") == "<***>"
    assert redactor.redact("aXbbbcc(d)e|") == "aXbbbcc(d)e|"


def test_longer_of_two_nested_secrets_wins() -> None:
    redactor = Redactor(["abcd1234", "abcd1234efgh"])
    assert redactor.redact("x abcd1234efgh y abcd1234 z") == "x *** y *** z"


def test_partly_overlapping_secrets_are_replaced_as_one() -> None:
    redactor = Redactor(["xxabcdef", "abcdefyy"])
    assert redactor.redact("<xxabcdefyy>") == "<***>"


def test_adjacent_secrets_get_a_placeholder_each() -> None:
    redactor = Redactor(["first-one", "second-two"])
    assert redactor.redact("first-onesecond-two") == "******"


def test_repr_does_not_reveal_secrets(redactor: Redactor) -> None:
    assert SECRET not in repr(redactor)


def test_concurrent_add_secret_loses_no_value() -> None:
    redactor = Redactor()
    values = [f"concurrent-secret-{n:04d}" for n in range(200)]
    barrier = threading.Barrier(8)

    def add(chunk: list[str]) -> None:
        barrier.wait()
        for value in chunk:
            redactor.add_secret(value)
            redactor.redact(value)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(add, [values[n::8] for n in range(8)]))
    assert redactor.redact(" ".join(values)) == " ".join(["***"] * len(values))


# --- encoded forms --------------------------------------------------------------------------

ODD = 'p@ss "word"\\/ü+?&='


@pytest.mark.parametrize(
    "encoded",
    [
        pytest.param(json.dumps(ODD)[1:-1], id="json-ascii"),
        pytest.param(json.dumps(ODD, ensure_ascii=False)[1:-1], id="json-unicode"),
        pytest.param(json.dumps(ODD)[1:-1].replace("/", "\\/"), id="json-escaped-slash"),
        pytest.param(quote(ODD), id="quote"),
        pytest.param(quote(ODD, safe=""), id="quote-nothing-safe"),
        pytest.param(quote_plus(ODD), id="quote-plus"),
        pytest.param(quote(ODD, safe="").lower(), id="quote-lowercase-hex"),
        pytest.param(base64.b64encode(ODD.encode()).decode(), id="base64"),
        pytest.param(base64.urlsafe_b64encode(ODD.encode()).decode(), id="base64-urlsafe"),
        pytest.param(base64.b64encode(ODD.encode()).decode().rstrip("="), id="base64-unpadded"),
    ],
)
def test_encoded_form_of_a_known_value_is_redacted(encoded: str) -> None:
    assert encoded != ODD
    assert Redactor([ODD]).redact(f'{{"v": "{encoded}"}}') == '{"v": "***"}'


def test_encoded_form_in_a_json_document_is_redacted() -> None:
    document = json.dumps({"message": f"connect with {ODD}"})
    redacted = Redactor([ODD]).redact(document)
    assert json.loads(redacted) == {"message": "connect with ***"}


@pytest.mark.parametrize("prefix_length", range(6))
@pytest.mark.parametrize("suffix_length", range(4))
def test_value_embedded_in_longer_base64_is_redacted(
    prefix_length: int, suffix_length: int
) -> None:
    value = b"embedded-secret-0123456789"
    prefix, suffix = b"P" * prefix_length, b"S" * suffix_length
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        encoded = encode(prefix + value + suffix).decode()
        redacted = Redactor([value.decode()]).redact(f"Basic {encoded}")
        # The characters that encode the value's bits alone are gone; those before it stay.
        first = (8 * prefix_length + 5) // 6
        stop = (8 * prefix_length + 8 * len(value)) // 6
        assert encoded[first:stop] not in redacted
        assert "***" in redacted
        assert redacted.startswith("Basic " + encoded[: 8 * prefix_length // 6])


def test_basic_auth_header_with_a_known_password_is_redacted() -> None:
    header = "Authorization: Basic " + base64.b64encode(b"alice:correct-horse-battery").decode()
    assert "***" in Redactor(["correct-horse-battery"]).redact(header)


def test_redact_bytes_keeps_bytes_that_are_not_utf8() -> None:
    data = b"\xff\xfe raw " + SECRET.encode() + b" \x80 caf\xc3\xa9"
    assert Redactor([SECRET]).redact_bytes(data) == b"\xff\xfe raw *** \x80 caf\xc3\xa9"


def test_redact_bytes_without_secrets_returns_the_input(redactor: Redactor) -> None:
    data = b"plain \xff bytes"
    assert redactor.redact_bytes(data) is data


# --- built-in patterns ----------------------------------------------------------------------

SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD6"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("id AKIAIOSFODNN7EXAMPLE ok", "id *** ok", id="aws-akia"),
        pytest.param("AWS_ACCESS_KEY_ID=ASIAY34FZKBOKMUTVV7A", "AWS_ACCESS_KEY_ID=***", id="asia"),
        pytest.param(
            f"aws_secret_access_key = {SECRET_KEY}", "aws_secret_access_key = ***", id="ini"
        ),
        pytest.param(
            f"export AWS_SECRET_ACCESS_KEY='{SECRET_KEY}'",
            "export AWS_SECRET_ACCESS_KEY='***'",
            id="env",
        ),
        pytest.param(
            f'{{"SecretAccessKey": "{SECRET_KEY}"}}', '{"SecretAccessKey": "***"}', id="json-key"
        ),
        pytest.param(
            f'"{{\\"SecretAccessKey\\": \\"{SECRET_KEY}\\"}}"',
            '"{\\"SecretAccessKey\\": \\"***\\"}"',
            id="json-in-json",
        ),
        pytest.param(
            f"aws_session_token={SESSION_TOKEN}", "aws_session_token=***", id="session-token"
        ),
        pytest.param(
            f'{{"SessionToken": "{SESSION_TOKEN}"}}', '{"SessionToken": "***"}', id="json-token"
        ),
        pytest.param(
            "X-Amz-Security-Token=IQoJb3JpZ2luX2VjEJr%2F%2F%2Fw&X-Amz-Date=1",
            "X-Amz-Security-Token=***&X-Amz-Date=1",
            id="presigned-url",
        ),
        pytest.param(
            "key sk-ant-api03-AbC_dEf-0123456789xyz used",
            "key *** used",
            id="anthropic",
        ),
        pytest.param(
            "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln",
            "Authorization: Bearer ***",
            id="bearer",
        ),
        pytest.param(f"before\n{PEM}\nafter", "before\n***\nafter", id="pem"),
        pytest.param(
            "tok ghp_0123456789abcdefghijklmnopqrstuvwxyz end", "tok *** end", id="github-ghp"
        ),
        pytest.param("gho_0123456789abcdefghijklmnopqrstuvwxyz", "***", id="github-gho"),
        pytest.param(
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123", "***", id="gh-pat"
        ),
        pytest.param("SLACK=xoxb-1234567890-abcdefghijkl", "SLACK=***", id="slack-token"),
        pytest.param(
            "post https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX now",
            "post https://hooks.slack.com/services/*** now",
            id="slack-webhook",
        ),
        pytest.param(
            "git clone https://bob:s3cr3t%40x@example.com/r.git",
            "git clone https://bob:***@example.com/r.git",
            id="url-password",
        ),
        pytest.param(
            "redis://:hunter2hunter@cache:6379/0", "redis://:***@cache:6379/0", id="url-no-user"
        ),
    ],
)
def test_builtin_pattern_is_redacted(text: str, expected: str) -> None:
    assert Redactor().redact(text) == expected


def test_unterminated_private_key_block_is_redacted() -> None:
    truncated = PEM.rsplit("-----END", 1)[0]
    assert Redactor().redact(f"log: {truncated}") == "log: ***"


def test_private_key_escaped_inside_json_is_redacted() -> None:
    document = json.dumps({"key": PEM, "user": "bob"})
    assert json.loads(Redactor().redact(document)) == {"key": "***", "user": "bob"}


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("XAKIAIOSFODNN7EXAMPLE", id="akia-inside-a-word"),
        pytest.param("AKIAIOSFODNN7EXAMPLEX", id="akia-too-long"),
        pytest.param("uses a Bearer token", id="bearer-prose"),
        pytest.param("https://example.com:8443/path?q=a@b", id="url-with-port"),
        pytest.param("ssh://git@github.com/org/repo", id="url-user-only"),
        pytest.param("aws_secret_access_key = ${AWS_SECRET}", id="secret-key-reference"),
        pytest.param("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", id="cert"),
    ],
)
def test_lookalike_is_left_alone(text: str) -> None:
    assert Redactor().redact(text) == text


def test_every_builtin_pattern_is_covered_by_a_test() -> None:
    assert set(BUILTIN_PATTERNS) == {
        "aws-access-key-id",
        "aws-secret-access-key",
        "aws-session-token",
        "anthropic-api-key",
        "bearer-token",
        "private-key",
        "github-token",
        "slack-token",
        "slack-webhook",
        "url-password",
    }


def test_redacted_text_is_not_redacted_again() -> None:
    redactor = Redactor([SECRET])
    once = redactor.redact(f"Bearer {SECRET} {PEM} https://u:{SECRET}@h")
    assert redactor.redact(once) == once


# --- configured patterns --------------------------------------------------------------------


def test_extra_pattern_is_redacted() -> None:
    redactor = Redactor(patterns=[r"acct-\d{6}"])
    assert redactor.redact("account acct-123456.") == "account ***."


def test_extra_pattern_with_a_secret_group_redacts_only_the_group() -> None:
    redactor = Redactor(patterns=[r"pin=(?P<secret>\d{4,})"])
    assert redactor.redact("user=bob pin=98765") == "user=bob pin=***"


def test_extra_pattern_with_inline_flags_is_applied() -> None:
    redactor = Redactor(patterns=[r"(?i)internal-[a-z]{5}"])
    assert redactor.redact("INTERNAL-ABCDE") == "***"


def test_invalid_pattern_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Redactor(patterns=["ok-[0-9]+", "broken(["])
    assert "broken([" in caught.value.message
    assert caught.value.hint
    assert caught.value.key == "core.redact_patterns"


def test_pattern_matching_the_empty_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="empty string"):
        Redactor(patterns=["x*"])


# --- structured data ------------------------------------------------------------------------


def test_redact_data_walks_nested_structures(redactor: Redactor) -> None:
    event = {
        "type": "step.completed",
        "outputs": [{"stdout": f"got {SECRET}"}, (f"{SECRET}", 3, None, True, 1.5)],
        "raw": SECRET.encode(),
    }
    assert redactor.redact_data(event) == {
        "type": "step.completed",
        "outputs": [{"stdout": "got ***"}, ("***", 3, None, True, 1.5)],
        "raw": b"***",
    }


def test_redact_data_leaves_the_input_unchanged(redactor: Redactor) -> None:
    event = {"message": [SECRET]}
    redactor.redact_data(event)
    assert event == {"message": [SECRET]}


def test_redact_data_redacts_keys(redactor: Redactor) -> None:
    assert redactor.redact_data({f"user-{SECRET}": 1}) == {"user-***": 1}


def test_redact_data_keeps_both_values_when_keys_collide(redactor: Redactor) -> None:
    assert redactor.redact_data({SECRET: 1, "***": 2}) == {"***": 1, "***#2": 2}


@pytest.mark.parametrize(
    "key", ["password", "SecretAccessKey", "aws_session_token", "Authorization", "api-key", "TOKEN"]
)
def test_redact_data_masks_values_under_credential_keys(key: str) -> None:
    assert Redactor().redact_data({key: "anything at all", "name": "anything at all"}) == {
        key: "***",
        "name": "anything at all",
    }


def test_redact_data_masks_numbers_and_lists_under_credential_keys() -> None:
    assert Redactor().redact_data({"pin": 1, "password": 1234, "token": ["a1", "b2"]}) == {
        "pin": 1,
        "password": "***",
        "token": ["***", "***"],
    }


def test_redact_data_keeps_empty_and_missing_credentials_visible() -> None:
    assert Redactor().redact_data({"password": "", "token": None}) == {
        "password": "",
        "token": None,
    }


def test_redact_data_does_not_mask_keys_that_merely_contain_a_credential_word() -> None:
    usage = {"input_tokens": 10, "tokenizer": "cl100k", "password_policy": "strict"}
    assert Redactor().redact_data(usage) == usage


# --- streams --------------------------------------------------------------------------------

STREAM_TEXT = (
    f"start {SECRET} mid\nAuthorization: Bearer abcdefghijklmnopqrstuvwx\n"
    f"{PEM}\nurl https://u:pw12345@host/x {SECRET}"
)


def test_stream_output_equals_redact_for_every_single_split_point(redactor: Redactor) -> None:
    expected = redactor.redact(STREAM_TEXT)
    for split in range(len(STREAM_TEXT) + 1):
        stream = redactor.stream()
        out = stream.feed(STREAM_TEXT[:split]) + stream.feed(STREAM_TEXT[split:]) + stream.flush()
        assert out == expected, split


def test_stream_fed_one_character_at_a_time_equals_redact(redactor: Redactor) -> None:
    stream = redactor.stream()
    out = "".join(stream.feed(char) for char in STREAM_TEXT) + stream.flush()
    assert out == redactor.redact(STREAM_TEXT)


def test_stream_emits_complete_lines_without_secrets_at_once(redactor: Redactor) -> None:
    stream = redactor.stream()
    assert stream.feed("line one\nline two\n") == "line one\nline two\n"
    assert stream.pending == 0


def test_stream_holds_back_only_an_unfinished_prefix_of_a_secret(redactor: Redactor) -> None:
    stream = redactor.stream()
    assert stream.feed(f"done\n{SECRET[:5]}") == "done\n"
    assert stream.pending == 5
    assert stream.feed(SECRET[5:] + "\n") == "***\n"


def test_stream_holds_back_an_open_private_key_block() -> None:
    stream = Redactor().stream(tail=8)
    head, rest = PEM[:60], PEM[60:]
    assert stream.feed(head + "\n") == ""
    assert stream.feed(rest + "\nbye\n") == "***\nbye\n"


def test_stream_unfinished_line_is_bounded_by_tail() -> None:
    stream = Redactor().stream(tail=16)
    assert len(stream.feed("x" * 100)) == 100 - 16
    assert stream.pending == 16


def test_stream_flush_returns_the_rest(redactor: Redactor) -> None:
    stream = redactor.stream()
    assert stream.feed(f"tail {SECRET}") == ""
    assert stream.flush() == "tail ***"
    assert stream.flush() == ""


def test_stream_gives_up_holding_an_open_match_beyond_max_pending() -> None:
    stream = Redactor().stream(tail=16, max_pending=64)
    out = stream.feed("-----BEGIN PRIVATE KEY-----\n" + "A" * 200)
    assert out.startswith("***")
    assert stream.pending <= 64


def test_stream_catches_a_url_password_whose_start_fits_in_the_tail() -> None:
    text = "https://user:" + "AKIAIOSFODNN7EXAMPLE" * 3 + "@host"
    stream = Redactor().stream(tail=128)  # the open "://user:..." is 68 characters

    out = stream.feed(text[:70]) + stream.feed(text[70:]) + stream.flush()

    assert out == "https://user:***@host"


def test_stream_rejects_a_tail_longer_than_max_pending(redactor: Redactor) -> None:
    with pytest.raises(ValueError, match="tail"):
        redactor.stream(tail=100, max_pending=10)


# --- properties -----------------------------------------------------------------------------

# No "*": a value containing the placeholder could re-form around one (documented).
SECRET_ALPHABET = string.ascii_letters + string.digits + "-_./+=:@$()[]{}|?^\\\"' "
TEXT_ALPHABET = SECRET_ALPHABET + "\n\r\t%é"
#: The start of a url-password match before its "@" arrives: "://user:" and the password so far.
OPEN_URL_PASSWORD = re.compile(r"://[^\s/?#@:\"'<>]*:[^\s/?#@\"'<>]*")
NOISE = st.sampled_from(
    [
        "Bearer ",
        "AKIA",
        "AKIAIOSFODNN7EXAMPLE",
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "\n-----END RSA PRIVATE KEY-----",
        "aws_secret_access_key=",
        "https://user:",
        "@host",
        "sk-ant-",
        "\n",
        "abcdefghijklmnopqrstuvwxyz0123",
    ]
)


def _chunks(text: str, cuts: list[int]) -> list[str]:
    points = [0, *sorted({cut % (len(text) + 1) for cut in cuts}), len(text)]
    return [text[a:b] for a, b in itertools.pairwise(points)]


@settings(deadline=None, max_examples=300)
@given(
    secret=st.text(SECRET_ALPHABET, min_size=MIN_SECRET_LENGTH, max_size=40),
    prefix=st.text(TEXT_ALPHABET, max_size=60),
    suffix=st.text(TEXT_ALPHABET, max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=12),
)
def test_stream_of_any_chunking_never_leaks_and_equals_redact(
    secret: str, prefix: str, suffix: str, cuts: list[int]
) -> None:
    redactor = Redactor([secret])
    text = prefix + secret + suffix
    stream = redactor.stream()
    out = "".join(stream.feed(chunk) for chunk in _chunks(text, cuts)) + stream.flush()
    assert out == redactor.redact(text)
    assert secret not in out


@settings(deadline=None, max_examples=300)
@given(
    secrets=st.lists(st.text(SECRET_ALPHABET, min_size=4, max_size=24), min_size=1, max_size=3),
    parts=st.lists(
        st.one_of(NOISE, st.text(TEXT_ALPHABET, max_size=20), st.integers(0, 2)), max_size=16
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=16),
)
def test_stream_with_patterns_and_several_secrets_equals_redact(
    secrets: list[str], parts: list[str | int], cuts: list[int]
) -> None:
    redactor = Redactor(secrets)
    # An integer part stands for one of the secrets, so they appear among the noise.
    text = "".join(secrets[p % len(secrets)] if isinstance(p, int) else p for p in parts)
    # The guarantee holds while no not-yet-matching start of a match is longer than the tail
    # (the module docstring): "https://user:" and a password longer than it is outside it.
    assume(all(len(m.group()) < 64 for m in OPEN_URL_PASSWORD.finditer(text)))
    stream = redactor.stream(tail=64)
    out = "".join(stream.feed(chunk) for chunk in _chunks(text, cuts)) + stream.flush()
    assert out == redactor.redact(text)


@settings(deadline=None)
@given(secret=st.text(SECRET_ALPHABET, min_size=4, max_size=30), text=st.text(TEXT_ALPHABET))
def test_redaction_is_idempotent(secret: str, text: str) -> None:
    redactor = Redactor([secret])
    once = redactor.redact(text + secret)
    assert redactor.redact(once) == once
