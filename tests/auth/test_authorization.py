"""The authoriser on its own: each rule, the looser-than-default definition, four-eyes, the
``auth.decision`` it publishes for every decision, and strict validation of its settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bcce.auth.authorization import (
    VOUCHED_BY,
    Authoriser,
    Decision,
    approver_identity,
    authorise_cancel,
    effective_step_policy,
    glob_covered,
    looser_than,
    same_person,
)
from bcce.auth.provider import Identity
from bcce.errors import BcceError, ExitCode, NotAuthorised
from bcce.events.bus import Event, InProcessEventBus
from bcce.policy.engine import PolicyEngine
from bcce.settings.layers import LayerOptions, load_settings
from bcce.settings.model import AuthorizationSettings, PolicySettings, StepPolicySettings
from bcce.steps.approval import Approval, Verdict

ANA = Identity("ana", ("dev",), "local")
BOB = Identity("bob", ("reviewers",), "local")
ROOT = Identity("root", ("admins",), "local")
NOBODY = Identity("eve", (), "local")

WORKFLOW = {"path": "ci/test.yml", "absolute": "/repo/ci/test.yml", "workflow": "nightly-test"}


class Recorder:
    """An authoriser on a real bus, and every event it publishes."""

    def __init__(self, **rules: Any) -> None:
        self.bus = InProcessEventBus()
        self.events: list[Event] = []
        self.bus.subscribe("*", self.events.append)
        self.authoriser = Authoriser(
            AuthorizationSettings.model_validate({"enabled": True, **rules}), bus=self.bus
        )

    def decide(self, identity: Identity, action: str, subject: str, **details: Any) -> Decision:
        return self.authoriser.decide(identity, action, subject, **details)

    def payloads(self) -> list[dict[str, Any]]:
        self.bus.flush()
        return [dict(e.payload) for e in self.events if e.type == "auth.decision"]


# -- enabled or not -----------------------------------------------------------------------------
def test_disabled_authorisation_allows_everything_and_still_publishes_the_decision() -> None:
    bus = InProcessEventBus()
    seen: list[Event] = []
    bus.subscribe("auth.decision", seen.append)
    authoriser = Authoriser(AuthorizationSettings(), bus=bus)

    decision = authoriser.check(NOBODY, "plugin.manage", "acme", operation="reload")

    assert (decision.allowed, decision.rule) == (True, "authorization disabled")
    assert [e.payload["rule"] for e in seen] == ["authorization disabled"]
    assert seen[0].payload["user"] == "eve"


def test_with_no_rule_an_action_is_refused_and_check_raises_exit_6() -> None:
    recorder = Recorder()

    with pytest.raises(NotAuthorised) as raised:
        recorder.authoriser.check(ANA, "workflow.run", "ci/test.yml", **WORKFLOW)

    error = raised.value
    assert error.exit_code == ExitCode.NOT_AUTHORISED
    assert "ana (local; groups: dev) may not run workflow ci/test.yml" in error.message
    assert "refused by rule 'no rule allows it'" in error.message
    assert error.key == "auth.authorization.workflows"
    assert error.hint is not None and "auth.authorization.workflows" in error.hint


def test_every_decision_is_published_with_the_identity_and_the_run() -> None:
    recorder = Recorder(workflows=[{"groups": ["dev"], "allow": ["ci/**"]}])

    recorder.decide(ANA, "workflow.run", "ci/test.yml", run_id="r-1", **WORKFLOW)
    recorder.decide(NOBODY, "workflow.run", "ci/test.yml", run_id="r-2", **WORKFLOW)

    payloads = recorder.payloads()
    assert [(p["user"], p["allowed"], p["run_id"]) for p in payloads] == [
        ("ana", True, "r-1"),
        ("eve", False, "r-2"),
    ]
    assert payloads[0]["groups"] == ["dev"] and payloads[0]["provider"] == "local"
    assert payloads[0]["rule"] == "auth.authorization.workflows[0]"
    assert [e.run_id for e in recorder.events] == [None, None]  # process events


def test_an_unknown_action_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        Recorder().decide(ANA, "workflow.delete", "x")


def test_admins_may_do_everything() -> None:
    recorder = Recorder(admins=["admins"])

    decisions = [
        recorder.decide(ROOT, "workflow.run", "x", **WORKFLOW),
        recorder.decide(ROOT, "workflow.cancel", "run r-1", started_by=ANA, **WORKFLOW),
        recorder.decide(ROOT, "policy.use", "p", looser_than_default=["max_edits 99 > 20"]),
        recorder.decide(ROOT, "approval.give", "s", started_by=ANA),
        recorder.decide(ROOT, "plugin.manage", "acme", operation="enable"),
    ]

    assert {(d.allowed, d.rule) for d in decisions} == {(True, "auth.authorization.admins")}


# -- workflows ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pattern",
    ["ci/**", "ci/*.yml", "/repo/ci/*.yml", "name:nightly-*", "name:nightly-test"],
)
def test_a_workflow_rule_allows_by_path_glob_or_name_glob(pattern: str) -> None:
    recorder = Recorder(workflows=[{"groups": ["dev"], "allow": [pattern]}])

    decision = recorder.decide(ANA, "workflow.run", "ci/test.yml", **WORKFLOW)

    assert (decision.allowed, decision.rule) == (True, "auth.authorization.workflows[0]")
    assert repr(pattern) in decision.reason


@pytest.mark.parametrize(
    "pattern",
    ["docs/**", "*.yml", "/elsewhere/**", "repo/ci/*.yml", "name:deploy-*", "nightly-test"],
)
def test_a_workflow_rule_refuses_what_its_globs_do_not_match(pattern: str) -> None:
    recorder = Recorder(workflows=[{"groups": ["dev"], "allow": [pattern]}])

    decision = recorder.decide(ANA, "workflow.run", "ci/test.yml", **WORKFLOW)

    assert (decision.allowed, decision.rule) == (False, "no rule allows it")


def test_a_relative_glob_never_matches_a_workflow_outside_the_working_directory() -> None:
    recorder = Recorder(workflows=[{"groups": ["dev"], "allow": ["**"]}])

    outside = recorder.decide(
        ANA, "workflow.run", "/tmp/x.yml", path=None, absolute="/tmp/x.yml", workflow="x"
    )

    assert not outside.allowed


def test_a_workflow_rule_applies_to_its_groups_and_users_only() -> None:
    recorder = Recorder(
        workflows=[
            {"groups": ["ops"], "allow": ["**"]},
            {"users": ["eve"], "allow": ["ci/**"]},
        ]
    )

    assert not recorder.decide(ANA, "workflow.resume", "x", **WORKFLOW).allowed
    by_name = recorder.decide(NOBODY, "workflow.resume", "x", **WORKFLOW)
    assert (by_name.allowed, by_name.rule) == (True, "auth.authorization.workflows[1]")


def test_the_first_rule_that_allows_decides() -> None:
    recorder = Recorder(
        workflows=[
            {"groups": ["dev"], "allow": ["docs/**"]},
            {"groups": ["dev"], "allow": ["ci/**"]},
            {"groups": ["dev"], "allow": ["**"]},
        ]
    )

    assert recorder.decide(ANA, "workflow.run", "x", **WORKFLOW).rule == (
        "auth.authorization.workflows[1]"
    )


# -- cancelling a run -----------------------------------------------------------------------------
def test_with_authorisation_disabled_anyone_may_cancel_any_run() -> None:
    authoriser = Authoriser(AuthorizationSettings(), bus=InProcessEventBus())

    decision = authoriser.decide(NOBODY, "workflow.cancel", "run r-1", started_by=ANA, **WORKFLOW)

    assert (decision.allowed, decision.rule) == (True, "authorization disabled")


def test_the_identity_that_started_a_run_may_cancel_it_without_a_rule() -> None:
    recorder = Recorder()
    started_by = Identity("ana", ("other",), "local")  # groups change; the person does not

    decision = recorder.decide(ANA, "workflow.cancel", "run r-1", started_by=started_by, **WORKFLOW)

    assert (decision.allowed, decision.rule) == (True, "started the run")
    assert recorder.payloads()[0]["started_by"] == "local:ana"


@pytest.mark.parametrize(
    "other",
    [
        Identity("ana", ("dev",), "cognito-oidc"),  # the same name at another provider
        Identity("ana", ("dev",), "local", {VOUCHED_BY: "approval:slack"}),  # a name only
        BOB,
    ],
)
def test_only_the_same_user_of_the_same_provider_counts_as_the_starter(other: Identity) -> None:
    decision = Recorder().decide(other, "workflow.cancel", "run r-1", started_by=ANA, **WORKFLOW)

    assert (decision.allowed, decision.rule) == (False, "no rule allows it")


def test_a_workflows_rule_matching_the_runs_workflow_allows_cancelling_it() -> None:
    recorder = Recorder(
        workflows=[
            {"groups": ["reviewers"], "allow": ["docs/**"]},
            {"groups": ["reviewers"], "allow": ["name:nightly-*"]},
        ]
    )

    decision = recorder.decide(BOB, "workflow.cancel", "run r-1", started_by=ANA, **WORKFLOW)

    assert (decision.allowed, decision.rule) == (True, "auth.authorization.workflows[1]")


def test_cancelling_someone_elses_run_without_a_rule_is_refused_with_exit_6() -> None:
    recorder = Recorder(admins=["admins"], workflows=[{"groups": ["dev"], "allow": ["**"]}])

    with pytest.raises(NotAuthorised) as raised:
        recorder.authoriser.check(
            BOB, "workflow.cancel", "run r-1", run_id="r-1", started_by=ANA, **WORKFLOW
        )

    error = raised.value
    assert error.exit_code == ExitCode.NOT_AUTHORISED
    assert "bob (local; groups: reviewers) may not cancel run r-1" in error.message
    assert "refused by rule 'no rule allows it'" in error.message
    assert "bob did not start the run (it was started by local:ana)" in error.message
    assert error.key == "auth.authorization.workflows"
    assert error.hint is not None and "the identity that started the run" in error.hint


def test_a_run_recording_no_starter_is_cancelled_only_by_rule() -> None:
    decision = Recorder().decide(ANA, "workflow.cancel", "run r-1", started_by=None, **WORKFLOW)

    assert (decision.allowed, decision.rule) == (False, "no rule allows it")
    assert "records no identity that started it" in decision.reason


def test_a_runs_recorded_workflow_path_is_matched_relative_to_the_working_directory(
    tmp_path: Path,
) -> None:
    recorder = Recorder(workflows=[{"groups": ["reviewers"], "allow": ["ci/*.yml"]}])
    repo = tmp_path / "repo"
    (repo / "ci").mkdir(parents=True)
    (repo / "ci" / "test.yml").write_text("")
    recorded = {"name": "deploy", "path": "ci/test.yml", "digest": "x"}

    decision = authorise_cancel(
        recorder.authoriser, BOB, run_id="r-1", workflow=recorded, started_by=ANA, cwd=repo
    )

    assert (decision.allowed, decision.rule) == (True, "auth.authorization.workflows[0]")
    payload = recorder.payloads()[0]
    assert (payload["path"], payload["absolute"]) == (
        "ci/test.yml",
        str(repo.resolve() / "ci" / "test.yml"),
    )
    assert (payload["subject"], payload["run_id"]) == ("run r-1", "r-1")


# -- policies -------------------------------------------------------------------------------------
def test_a_policy_no_looser_than_the_default_needs_no_rule() -> None:
    decision = Recorder().decide(ANA, "policy.use", "p", looser_than_default=[])

    assert (decision.allowed, decision.rule) == (True, "no looser than policy.default")


def test_a_looser_policy_is_refused_without_a_rule_naming_what_is_looser() -> None:
    decision = Recorder(policies=[{"groups": ["ops"], "looser_than_default": True}]).decide(
        ANA, "policy.use", "p", looser_than_default=["max_edits 99 > 20 (policy.default)"]
    )

    assert (decision.allowed, decision.rule) == (False, "no rule allows it")
    assert "max_edits 99 > 20" in decision.reason


def test_looser_than_default_true_allows_any_looser_policy() -> None:
    decision = Recorder(policies=[{"groups": ["dev"], "looser_than_default": True}]).decide(
        ANA, "policy.use", "p", looser_than_default=["timeout_seconds 5000 > 900"]
    )

    assert (decision.allowed, decision.rule) == (True, "auth.authorization.policies[0]")


def test_a_preset_rule_allows_its_preset_by_glob() -> None:
    recorder = Recorder(policies=[{"groups": ["dev"], "presets": ["test-*"]}])

    granted = recorder.decide(
        ANA,
        "policy.use",
        "p",
        preset="test-fixer",
        looser_than_default=["x"],
        looser_than_preset=[],
    )
    other = recorder.decide(
        ANA, "policy.use", "p", preset="refactor", looser_than_default=["x"], looser_than_preset=[]
    )

    assert (granted.allowed, granted.rule) == (True, "auth.authorization.policies[0]")
    assert (other.allowed, other.rule) == (False, "no rule allows it")


def test_a_preset_rule_does_not_allow_loosening_the_preset_further() -> None:
    recorder = Recorder(policies=[{"groups": ["dev"], "presets": ["*"]}])

    decision = recorder.decide(
        ANA,
        "policy.use",
        "p",
        preset="test-fixer",
        looser_than_default=["max_edits 99 > 20"],
        looser_than_preset=["max_edits 99 > 15 (test-fixer)"],
    )

    assert not decision.allowed
    assert "looser than its preset 'test-fixer'" in decision.reason


# -- what "looser than policy.default" means ----------------------------------------------------
DEFAULT = StepPolicySettings(
    allowed_paths=["src/**", "tests/*.py"], cmd_allowlist=["pytest", "git status"]
)


@pytest.mark.parametrize(
    ("change", "looser"),
    [
        ({"timeout_seconds": 901}, "timeout_seconds 901 > 900"),
        ({"max_files": 51}, "max_files 51 > 50"),
        ({"max_edits": 21}, "max_edits 21 > 20"),
        ({"allowed_paths": ["docs/**"]}, "allowed_paths 'docs/**'"),
        ({"allowed_paths": ["**/*.py"]}, "allowed_paths '**/*.py'"),
        ({"cmd_allowlist": ["git"]}, "cmd_allowlist allows 'git'"),
        ({"cmd_allowlist": ["curl"]}, "cmd_allowlist allows 'curl'"),
    ],
)
def test_any_higher_limit_wider_path_or_extra_command_is_looser(
    change: dict[str, Any], looser: str
) -> None:
    chosen = DEFAULT.model_copy(update=change)

    found = looser_than(chosen, DEFAULT, "policy.default")

    assert len(found) == 1 and found[0].startswith(looser), found


def test_a_tighter_policy_is_not_looser() -> None:
    chosen = StepPolicySettings(
        timeout_seconds=60,
        max_files=5,
        max_edits=0,
        allowed_paths=["src/app/**", "src/main.py", "tests/*.py"],
        cmd_allowlist=["pytest -q", "git status --short"],
    )

    assert looser_than(chosen, DEFAULT, "policy.default") == []


def test_an_allowlist_where_the_default_has_none_is_looser_for_an_agent_step() -> None:
    chosen = StepPolicySettings(cmd_allowlist=["pytest"])

    assert looser_than(chosen, StepPolicySettings(), "policy.default") == [
        "cmd_allowlist allows 'pytest' (policy.default allows no command)"
    ]


@pytest.mark.parametrize(
    ("glob", "baseline", "covered"),
    [
        ("src/**", ["src/**"], True),
        ("anything/at/all", ["**"], True),
        ("src/app/*.py", ["src/**"], True),
        ("src/main.py", ["src/*.py"], True),  # a literal path a baseline glob matches
        ("src/*.py", ["src/*.py", "lib/**"], True),
        ("src*/x", ["src/**"], False),
        ("src/../etc/*", ["src/**"], False),
        ("src/**/*.py", ["**/*.py"], False),  # true, but not proven: counts as looser
        ("*.py", ["src/**"], False),
        ("s?c/**", ["s?c/**/x"], False),
        ("x", [], False),
    ],
)
def test_glob_coverage_is_sound(glob: str, baseline: list[str], covered: bool) -> None:
    assert glob_covered(glob, baseline) is covered


@pytest.mark.parametrize(
    "declared",
    [{}, {"max_edits": 3}, {"allowed_paths": ["src/**"], "cmd_allowlist": None}],
)
def test_the_effective_policy_is_the_one_agent_steps_run_under(declared: dict[str, Any]) -> None:
    from types import SimpleNamespace

    from bcce.steps.agent import effective_policy

    engine = PolicyEngine(PolicySettings(cmd_allowlist=["make"]))
    context: Any = SimpleNamespace(policy=engine, step=SimpleNamespace(raw={"policy": declared}))

    assert effective_step_policy(engine, declared) == effective_policy(context)


# -- approvals and plugins ------------------------------------------------------------------------
def test_approvals_are_given_by_the_approvals_groups_and_users() -> None:
    recorder = Recorder(approvals={"groups": ["reviewers"], "users": ["carol"]})
    carol = Identity("carol", (), "approval:slack", {"bcce.vouched_by": "approval:slack"})

    bob = recorder.decide(BOB, "approval.give", "s", started_by=ANA)
    by_name = recorder.decide(carol, "approval.give", "s", started_by=ANA)
    eve = recorder.decide(NOBODY, "approval.give", "s", started_by=ANA)

    assert (bob.allowed, bob.rule) == (True, "auth.authorization.approvals")
    assert by_name.allowed and "as approval:slack reports" in by_name.reason
    assert (eve.allowed, eve.rule) == (False, "no rule allows it")


def test_four_eyes_refuses_the_starter_even_an_admin() -> None:
    recorder = Recorder(admins=["admins"], approvals={"groups": ["dev"], "four_eyes": True})

    own = recorder.decide(ROOT, "approval.give", "s", started_by=ROOT)
    other = recorder.decide(ROOT, "approval.give", "s", started_by=ANA)

    assert (own.allowed, own.rule) == (False, "auth.authorization.approvals.four_eyes")
    assert other.allowed
    error = own.error()
    assert error.key == "auth.authorization.approvals.four_eyes"
    assert error.hint is not None and "someone other than" in error.hint


def test_four_eyes_refuses_when_the_run_records_no_starter() -> None:
    recorder = Recorder(approvals={"groups": ["reviewers"], "four_eyes": True})

    decision = recorder.decide(BOB, "approval.give", "s", started_by=None)

    assert not decision.allowed and "records no identity" in decision.reason


def test_four_eyes_compares_provider_and_user() -> None:
    assert same_person(ANA, Identity("ana", ("other",), "local"))
    assert not same_person(ANA, Identity("ana", ("dev",), "cognito-oidc"))
    assert not same_person(ANA, BOB)


def test_a_user_an_integration_names_is_compared_by_name_alone() -> None:
    approval = Approval(Verdict.APPROVED, "ana", "approval:slack")

    named = approver_identity(approval, started_by=ANA)

    assert (named.user, named.groups, named.provider) == ("ana", (), "approval:slack")
    assert same_person(named, ANA)  # fails closed: Slack's "ana" may be the starter


def test_the_workflows_approve_true_is_the_starters_approval() -> None:
    approval = Approval(Verdict.APPROVED, "workflow", "workflow", "approve: true")

    assert approver_identity(approval, started_by=ANA) == ANA


def test_an_approval_carrying_an_identity_is_taken_at_its_word() -> None:
    approval = Approval(Verdict.APPROVED, "bob", "command line", identity=BOB)

    assert approver_identity(approval, started_by=ANA) is BOB


def test_plugin_management_is_for_the_plugins_groups() -> None:
    recorder = Recorder(plugins={"groups": ["platform"]})
    operator = Identity("olga", ("platform",), "local")

    allowed = recorder.decide(operator, "plugin.manage", "acme", operation="reload")
    refused = recorder.decide(ANA, "plugin.manage", "acme", operation="reload")

    assert (allowed.allowed, allowed.rule) == (True, "auth.authorization.plugins")
    assert (refused.allowed, refused.rule) == (False, "no rule allows it")
    assert recorder.payloads()[1]["operation"] == "reload"


# -- the settings ---------------------------------------------------------------------------------
def _load(tmp_path: Path, rules: dict[str, Any]) -> BcceError:
    options = LayerOptions(environ={}, cwd=tmp_path, user_config_file=tmp_path / "none.yaml")
    with pytest.raises(BcceError) as raised:
        load_settings(options, {"auth": {"authorization": rules}})
    return raised.value


@pytest.mark.parametrize(
    ("rules", "key", "message"),
    [
        ({"workflows": [{"groups": [], "allow": ["x"]}]}, "workflows[0]", "needs groups"),
        ({"workflows": [{"groups": ["a"], "allow": []}]}, "workflows[0].allow", "allows nothing"),
        ({"workflows": [{"groups": ["a"], "allow": ["name:"]}]}, "workflows[0].allow", "name:"),
        ({"workflows": [{"groups": ["a"], "allow": ["x"], "run": 1}]}, "run", "unknown key"),
        ({"policies": [{"groups": ["a"]}]}, "policies[0]", "allows nothing"),
        ({"policies": [{"groups": ["a"], "presets": [""]}]}, "policies[0]", "empty"),
        ({"admins": [" ops"]}, "admins", "surrounded by spaces"),
        ({"approvals": {"groups": [""]}}, "approvals.groups", "empty"),
        ({"approvals": {"four_eye": True}}, "approvals.four_eye", "unknown key"),
        ({"plugins": {"groups": "platform"}}, "plugins.groups", "list"),
        ({"enable": True}, "authorization.enable", "unknown key"),
    ],
)
def test_bad_rules_are_configuration_errors_naming_the_key(
    tmp_path: Path, rules: dict[str, Any], key: str, message: str
) -> None:
    error = _load(tmp_path, rules)

    assert error.exit_code == ExitCode.INVALID
    assert error.key is not None and error.key.endswith(key), error.render()
    assert message in error.message, error.render()
