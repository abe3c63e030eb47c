"""The scripted model server over real HTTP: Anthropic SSE, Bedrock event stream, scripts."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from bcce.errors import ConfigError
from bcce.testing.model_server import (
    ScriptedModelServer,
    encode_event_frame,
)
from bcce.testing.script import EXHAUSTED_TEXT, load_script, parse_script

SCRIPT: dict[str, Any] = {
    "turns": [
        {
            "text": "I'll look at {workspace}.",
            "tool_use": [{"name": "Read", "input": {"file_path": "{workspace}/x.py"}}],
        },
        {"tool_use": [{"name": "Edit", "input": {"old": "{unknown}", "n": 2}}]},
        {"text": "Done.", "usage": {"output_tokens": 7}},
    ],
    "usage": {"input_tokens": 50, "output_tokens": 9},
    "side_text": "A title",
    "subagent": {"marker": "SUBAGENT-7", "turns": [{"text": "Sub done."}]},
}
TOOLS = [{"name": "Read", "input_schema": {"type": "object"}}]


@pytest.fixture
def server() -> Iterator[ScriptedModelServer]:
    with ScriptedModelServer(SCRIPT, placeholders={"workspace": "/ws"}) as running:
        yield running


def conversation(assistant_turns: int, first: str = "Fix the test") -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": first}]}
    ]
    for n in range(assistant_turns):
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"a{n}"}]})
        messages.append({"role": "user", "content": f"u{n}"})
    return messages


def body(assistant_turns: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-test",
        "max_tokens": 100,
        "stream": True,
        "tools": TOOLS,
        "messages": conversation(assistant_turns),
        **extra,
    }


def http(
    server: ScriptedModelServer, method: str, path: str, payload: Any = None
) -> tuple[int, dict[str, str], bytes]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        server.url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "x-api-key": "secret-key"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def sse(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for chunk in raw.decode().split("\n\n"):
        if not chunk:
            continue
        lines = dict(line.split(": ", 1) for line in chunk.split("\n"))
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def stream(server: ScriptedModelServer, payload: dict[str, Any]) -> list[dict[str, Any]]:
    status, headers, raw = http(server, "POST", "/v1/messages?beta=true", payload)
    assert status == 200, raw
    assert headers["Content-Type"].startswith("text/event-stream")
    return [data for _, data in sse(raw)]


def reply_text(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["delta"]["text"]
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "text_delta"
    )


def tool_inputs(events: list[dict[str, Any]]) -> list[Any]:
    return [
        json.loads(e["delta"]["partial_json"])
        for e in events
        if e["type"] == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    ]


def stop_reason(events: list[dict[str, Any]]) -> str:
    return str(next(e["delta"]["stop_reason"] for e in events if e["type"] == "message_delta"))


# Anthropic wire format --------------------------------------------------------------------------


def test_head_root_answers_200(server: ScriptedModelServer) -> None:
    status, _, _ = http(server, "HEAD", "/")
    assert status == 200


def test_stream_events_come_in_protocol_order(server: ScriptedModelServer) -> None:
    events = stream(server, body())
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_stream_event_name_matches_data_type(server: ScriptedModelServer) -> None:
    _, _, raw = http(server, "POST", "/v1/messages", body())
    assert all(name == data["type"] for name, data in sse(raw))


def test_stream_blocks_are_text_then_tool_use_with_indexes(server: ScriptedModelServer) -> None:
    events = stream(server, body())
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "text"),
        (1, "tool_use"),
    ]
    assert starts[1]["content_block"]["name"] == "Read"
    assert starts[1]["content_block"]["id"] == "toolu_bcce_000_00"


def test_stream_tool_turn_stops_for_tool_use_with_usage(server: ScriptedModelServer) -> None:
    events = stream(server, body())
    delta = next(e for e in events if e["type"] == "message_delta")
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"output_tokens": 9}
    assert events[0]["message"]["usage"]["input_tokens"] == 50


def test_stream_message_start_echoes_the_requested_model(server: ScriptedModelServer) -> None:
    events = stream(server, body())
    assert events[0]["message"]["model"] == "claude-test"
    assert events[0]["message"]["role"] == "assistant"


def test_turn_index_is_the_number_of_assistant_messages(server: ScriptedModelServer) -> None:
    events = stream(server, body(assistant_turns=1))
    assert tool_inputs(events) == [{"old": "{unknown}", "n": 2}]


def test_last_turn_ends_the_turn_with_its_own_usage(server: ScriptedModelServer) -> None:
    events = stream(server, body(assistant_turns=2))
    assert reply_text(events) == "Done."
    assert stop_reason(events) == "end_turn"
    assert next(e for e in events if e["type"] == "message_delta")["usage"]["output_tokens"] == 7


def test_consecutive_assistant_messages_count_as_one_turn(server: ScriptedModelServer) -> None:
    payload = body()
    payload["messages"] += [
        {"role": "assistant", "content": [{"type": "text", "text": "thinking"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Read"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]},
    ]
    assert tool_inputs(stream(server, payload)) == [{"old": "{unknown}", "n": 2}]


def test_conversation_past_the_script_is_exhausted(server: ScriptedModelServer) -> None:
    events = stream(server, body(assistant_turns=3))
    assert reply_text(events) == EXHAUSTED_TEXT
    assert stop_reason(events) == "end_turn"
    assert server.requests[0].exhausted


def test_request_without_tools_is_a_side_request(server: ScriptedModelServer) -> None:
    payload = body(assistant_turns=1)
    del payload["tools"]
    events = stream(server, payload)
    assert reply_text(events) == "A title"
    recorded = server.requests[-1]
    assert (recorded.conversation, recorded.turn) == ("side", None)


def test_side_request_does_not_advance_the_main_turn(server: ScriptedModelServer) -> None:
    side = body()
    del side["tools"]
    stream(server, side)
    assert reply_text(stream(server, body())) == "I'll look at /ws."


def test_placeholders_are_substituted_in_text_and_tool_input(
    server: ScriptedModelServer,
) -> None:
    events = stream(server, body())
    assert reply_text(events) == "I'll look at /ws."
    assert tool_inputs(events) == [{"file_path": "/ws/x.py"}]


def test_unknown_placeholder_is_left_as_written(server: ScriptedModelServer) -> None:
    assert tool_inputs(stream(server, body(assistant_turns=1)))[0]["old"] == "{unknown}"


def test_subagent_marker_in_first_user_message_selects_subagent_turns(
    server: ScriptedModelServer,
) -> None:
    payload = body()
    payload["messages"] = conversation(0, first="Task: SUBAGENT-7 read the file")
    assert reply_text(stream(server, payload)) == "Sub done."
    assert server.requests[-1].conversation == "subagent"


def test_marker_after_the_first_user_message_stays_main(server: ScriptedModelServer) -> None:
    payload = body(assistant_turns=1)
    payload["messages"][-1] = {"role": "user", "content": "SUBAGENT-7"}
    stream(server, payload)
    assert (server.requests[-1].conversation, server.requests[-1].turn) == ("main", 1)


def test_non_stream_request_returns_one_json_message(server: ScriptedModelServer) -> None:
    status, headers, raw = http(server, "POST", "/v1/messages", body(stream=False))
    message = json.loads(raw)
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert [block["type"] for block in message["content"]] == ["text", "tool_use"]
    assert message["stop_reason"] == "tool_use"


def test_count_tokens_answers_input_tokens(server: ScriptedModelServer) -> None:
    status, _, raw = http(server, "POST", "/v1/messages/count_tokens", body())
    assert status == 200
    assert json.loads(raw)["input_tokens"] > 0


def test_requests_are_recorded_with_query_body_and_turn(server: ScriptedModelServer) -> None:
    stream(server, body(assistant_turns=1))
    (recorded,) = server.requests
    assert (recorded.method, recorded.path, recorded.query) == (
        "POST",
        "/v1/messages",
        {"beta": "true"},
    )
    assert recorded.body == body(assistant_turns=1)
    assert (recorded.wire, recorded.kind, recorded.turn, recorded.stream) == (
        "anthropic",
        "messages",
        1,
        True,
    )


def test_recorded_headers_mask_credentials(server: ScriptedModelServer) -> None:
    stream(server, body())
    headers = server.requests[0].headers
    assert headers["x-api-key"] == "***"
    assert headers["content-type"] == "application/json"


def test_recorded_request_lists_tool_results() -> None:
    payload = body()
    payload["messages"].append(
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "x"}]}
    )
    with ScriptedModelServer(SCRIPT) as running:
        stream(running, payload)
        assert running.requests[0].tool_results() == [
            {"type": "tool_result", "tool_use_id": "t1", "content": "x"}
        ]


def test_turn_requests_filter_by_conversation(server: ScriptedModelServer) -> None:
    side = body()
    del side["tools"]
    stream(server, side)
    stream(server, body(assistant_turns=1))
    assert [r.turn for r in server.turn_requests()] == [1]
    assert len(server.turn_requests("side")) == 1


def test_concurrent_requests_are_all_recorded(server: ScriptedModelServer) -> None:
    threads = [threading.Thread(target=stream, args=(server, body(n % 3))) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.turn or 0 for r in server.requests) == sorted(n % 3 for n in range(12))


def test_unknown_path_is_404_with_an_error_body(server: ScriptedModelServer) -> None:
    status, _, raw = http(server, "POST", "/v2/other", {})
    assert status == 404
    assert json.loads(raw)["error"]["type"] == "not_found_error"


def test_invalid_json_body_is_400(server: ScriptedModelServer) -> None:
    request = urllib.request.Request(server.url + "/v1/messages", data=b"{nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 400
    assert server.requests[0].kind == "bad_request"


# Bedrock wire format ----------------------------------------------------------------------------

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"


def bedrock_body(assistant_turns: int = 0) -> dict[str, Any]:
    payload = body(assistant_turns, anthropic_version="bedrock-2023-05-31")
    del payload["model"], payload["stream"]
    return payload


def decode_frames(raw: bytes) -> list[Any]:
    buffer = EventStreamBuffer()
    buffer.add_data(raw)
    return list(buffer)  # decoding checks the prelude and message CRCs


def test_bedrock_inference_profiles_answer_empty_object(server: ScriptedModelServer) -> None:
    status, _, raw = http(server, "GET", "/inference-profiles?type=SYSTEM_DEFINED")
    assert (status, json.loads(raw)) == (200, {})
    assert server.requests[0].query == {"type": "SYSTEM_DEFINED"}


def test_bedrock_stream_is_an_aws_event_stream(server: ScriptedModelServer) -> None:
    path = f"/model/{MODEL}/invoke-with-response-stream"
    status, headers, raw = http(server, "POST", path, bedrock_body())
    assert status == 200
    assert headers["Content-Type"] == "application/vnd.amazon.eventstream"
    frames = decode_frames(raw)
    assert len(frames) == 9
    assert all(
        frame.headers
        == {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
        for frame in frames
    )


def test_bedrock_frames_carry_the_anthropic_events(server: ScriptedModelServer) -> None:
    path = f"/model/{MODEL}/invoke-with-response-stream"
    _, _, raw = http(server, "POST", path, bedrock_body())
    events = [
        json.loads(base64.b64decode(json.loads(frame.payload)["bytes"]))
        for frame in decode_frames(raw)
    ]
    _, _, sse_raw = http(server, "POST", "/v1/messages", body(model=MODEL))
    expected = [data for _, data in sse(sse_raw)]
    assert [e["type"] for e in events] == [e["type"] for e in expected]
    assert tool_inputs(events) == [{"file_path": "/ws/x.py"}]
    assert events[0]["message"]["model"] == MODEL


def test_bedrock_frame_checksums_match_zlib_crc32() -> None:
    frame = encode_event_frame(b'{"bytes":""}', {":event-type": "chunk"})
    assert int.from_bytes(frame[8:12], "big") == zlib.crc32(frame[:8])
    assert int.from_bytes(frame[-4:], "big") == zlib.crc32(frame[:-4])
    assert int.from_bytes(frame[:4], "big") == len(frame)


def test_bedrock_invoke_returns_a_json_message(server: ScriptedModelServer) -> None:
    status, headers, raw = http(server, "POST", f"/model/{MODEL}/invoke", bedrock_body(2))
    message = json.loads(raw)
    assert status == 200
    assert message["content"] == [{"type": "text", "text": "Done."}]
    assert headers["X-Amzn-Bedrock-Output-Token-Count"] == "7"


def test_bedrock_model_id_is_url_decoded(server: ScriptedModelServer) -> None:
    arn = "arn:aws:bedrock:us-east-1:123:inference-profile/x"
    quoted = urllib.parse.quote(arn, safe="")
    http(server, "POST", f"/model/{quoted}/invoke", bedrock_body())
    recorded = server.requests[0]
    assert (recorded.model, recorded.wire, recorded.stream) == (arn, "bedrock", False)


def test_bedrock_count_tokens_answers_input_tokens(server: ScriptedModelServer) -> None:
    status, _, raw = http(server, "POST", f"/model/{MODEL}/count-tokens", {"input": {}})
    assert status == 200
    assert json.loads(raw)["inputTokens"] > 0


# Environment helpers ----------------------------------------------------------------------------


def test_anthropic_env_points_at_the_server(server: ScriptedModelServer, tmp_path: Path) -> None:
    env = server.anthropic_env(tmp_path)
    assert env["ANTHROPIC_BASE_URL"] == server.url
    assert env["HOME"] == str(tmp_path)
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"


def test_bedrock_env_points_at_the_server(server: ScriptedModelServer, tmp_path: Path) -> None:
    env = server.bedrock_env(tmp_path, model="m-1")
    assert env["ANTHROPIC_BEDROCK_BASE_URL"] == server.url
    assert (env["CLAUDE_CODE_USE_BEDROCK"], env["CLAUDE_CODE_SKIP_BEDROCK_AUTH"]) == ("1", "1")
    assert env["ANTHROPIC_MODEL"] == "m-1"


# Lifecycle --------------------------------------------------------------------------------------


def test_server_binds_loopback_only(server: ScriptedModelServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.port}"


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = ScriptedModelServer(SCRIPT).url


def test_starting_twice_is_an_error(server: ScriptedModelServer) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        server.start()


def test_stop_refuses_further_connections() -> None:
    running = ScriptedModelServer(SCRIPT).start()
    url = running.url
    running.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)


def test_stop_is_idempotent() -> None:
    running = ScriptedModelServer(SCRIPT).start()
    running.stop()
    running.stop()


# Scripts ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ([], None, "expected a mapping"),
        ({}, None, "needs 'turns'"),
        ({"turns": []}, "turns", "non-empty list of turns"),
        ({"turns": [{"text": "a"}], "extra": 1}, "extra", "unknown key 'extra'"),
        ({"turns": [{}]}, "turns.0", "needs 'text', 'tool_use' or both"),
        ({"turns": [{"text": ""}]}, "turns.0.text", "non-empty string"),
        ({"turns": [{"tool_use": {"name": "Read"}}]}, "turns.0.tool_use", "non-empty list"),
        ({"turns": [{"tool_use": [{"input": {}}]}]}, "turns.0.tool_use.0", "needs 'name'"),
        (
            {"turns": [{"tool_use": [{"name": "Read", "input": "x"}]}]},
            "turns.0.tool_use.0.input",
            "expected a mapping",
        ),
        ({"turns": [{"text": "a"}], "usage": {"input_tokens": -1}}, "usage.input_tokens", "non"),
        (
            {"turns": [{"text": "a", "usage": {"output_tokens": True}}]},
            "turns.0.usage.output_tokens",
            "integer",
        ),
        ({"turns": [{"text": "a"}], "subagent": {"turns": [{"text": "b"}]}}, "subagent", "marker"),
    ],
)
def test_bad_script_is_a_config_error_naming_the_key(
    data: Any, key: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_script(data)
    assert caught.value.key == key


def test_yaml_script_error_points_at_file_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("turns:\n  - text: ok\n  - tool_use: [{name: Read, inptu: {}}]\n")
    with pytest.raises(ConfigError, match="unknown key 'inptu'") as caught:
        load_script(path)
    assert str(caught.value.location).startswith(f"{path}:3:")


def test_yaml_and_json_scripts_load_the_same(tmp_path: Path) -> None:
    yaml_path = tmp_path / "s.yaml"
    yaml_path.write_text(
        "turns:\n  - text: hi\n    tool_use: [{name: Read, input: {file_path: a}}]\n"
    )
    json_path = tmp_path / "s.json"
    json_path.write_text(
        json.dumps(
            {"turns": [{"text": "hi", "tool_use": [{"name": "Read", "input": {"file_path": "a"}}]}]}
        )
    )
    assert load_script(yaml_path).turns == load_script(json_path).turns


def test_json_script_with_duplicate_key_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"turns": [{"text": "a"}], "turns": []}')
    with pytest.raises(ConfigError, match="duplicate key 'turns'"):
        load_script(path)


def test_missing_script_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        ScriptedModelServer(tmp_path / "absent.yaml")


def test_explicit_tool_id_is_kept() -> None:
    script = {"turns": [{"tool_use": [{"name": "Read", "id": "toolu_mine"}]}]}
    with ScriptedModelServer(script) as running:
        events = stream(running, body())
    start = next(e for e in events if e["type"] == "content_block_start")
    assert start["content_block"]["id"] == "toolu_mine"


# Command line -----------------------------------------------------------------------------------


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("turns:\n  - text: 'in {place}'\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "bcce.testing.model_server", str(path), "--set", "place=here"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        payload = json.dumps(body()).encode()
        request = urllib.request.Request(url + "/v1/messages", data=payload, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            events = [data for _, data in sse(response.read())]
        assert reply_text(events) == "in here"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_bad_script_exits_with_config_error_code(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("turns: []\n")
    result = subprocess.run(
        [sys.executable, "-m", "bcce.testing.model_server", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "BCCE100" in result.stderr
