"""Authorisation: who may run which workflows, use which policies, approve changes, manage plugins.

The rules are ``auth.authorization`` (docs/identity.md#authorisation). An :class:`Authoriser`
decides one action for one identity:

    workflow.run, workflow.resume   may IDENTITY run this workflow (by path glob or name glob)?
    workflow.cancel                 may IDENTITY cancel this run (started it, or may run it)?
    policy.use                      may IDENTITY run a step under this policy (preset, looser)?
    approval.give                   may IDENTITY approve an apply_diff change (and four-eyes)?
    plugin.manage                   may IDENTITY enable, disable or reload a plugin?

The first rule that allows the action decides; without one the action is refused ("no rule
allows it"). Every decision, allowed or not (and with authorisation disabled, when everything is
allowed), is published as an ``auth.decision`` event, which the audit trail records with the
identity. :meth:`Authoriser.check` raises :class:`~bcce.errors.NotAuthorised` (exit 6) on a
refusal, naming the rule, the identity and the setting to change.

A step's policy is *looser than policy.default* when it allows something the default does not:
a higher ``timeout_seconds``, ``max_files`` or ``max_edits``; an ``allowed_paths`` glob that no
default glob is proven to cover (see :func:`glob_covered`: the same glob, ``**``, or ``DIR/**``
over a glob under the literal directory ``DIR/`` — anything else counts as looser, since it
cannot be shown not to be); or a ``cmd_allowlist`` entry that no default entry covers (an entry
covers the entries that start with its words). A policy no looser than the default needs no
permission; a looser one needs a ``policies`` rule granting the preset it names (and it must be
no looser than that preset) or ``looser_than_default: true``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from bcce.auth.provider import Identity
from bcce.core.log import get_logger
from bcce.errors import AuthenticationFailed, NotAuthorised

if TYPE_CHECKING:
    from bcce.auth.provider import AuthenticationProvider
    from bcce.events.bus import EventBus
    from bcce.policy.engine import PolicyEngine
    from bcce.settings.model import AuthorizationSettings, StepPolicySettings
    from bcce.steps.approval import Approval
    from bcce.workflow.model import Step, Workflow

log = get_logger("auth")

ACTIONS: Final = (
    "workflow.run",
    "workflow.resume",
    "workflow.cancel",
    "policy.use",
    "approval.give",
    "plugin.manage",
)
SETTINGS_KEY: Final = "auth.authorization"
RULE_DISABLED: Final = "authorization disabled"
RULE_NONE: Final = "no rule allows it"
RULE_ADMINS: Final = f"{SETTINGS_KEY}.admins"
RULE_FOUR_EYES: Final = f"{SETTINGS_KEY}.approvals.four_eyes"
RULE_STARTED: Final = "started the run"
RULE_NOT_LOOSER: Final = "no looser than policy.default"
#: Set on an identity that an approval integration (not an auth provider) vouches for.
VOUCHED_BY: Final = "bcce.vouched_by"

#: The setting that governs each action: the hint of a refusal names it.
_SETTING: Final = {
    "workflow.run": f"{SETTINGS_KEY}.workflows",
    "workflow.resume": f"{SETTINGS_KEY}.workflows",
    "workflow.cancel": f"{SETTINGS_KEY}.workflows",
    "policy.use": f"{SETTINGS_KEY}.policies",
    "approval.give": f"{SETTINGS_KEY}.approvals",
    "plugin.manage": f"{SETTINGS_KEY}.plugins",
}
_VERB: Final = {
    "workflow.run": "run workflow",
    "workflow.resume": "resume workflow",
    "workflow.cancel": "cancel",
    "policy.use": "use",
    "approval.give": "approve",
    "plugin.manage": "manage plugin",
}
#: What the hint of a refusal suggests, after "an administrator can allow it in SETTING".
_HOW: Final = {
    "workflow.run": ": a rule whose allow matches the workflow's path or name:NAME",
    "workflow.resume": ": a rule whose allow matches the workflow's path or name:NAME",
    "workflow.cancel": ": a rule whose allow matches the workflow's path or name:NAME; or the "
    "identity that started the run (or an admin) cancels it",
    "policy.use": " (presets, or looser_than_default: true); or keep the step's policy within "
    "policy.default",
    "approval.give": " (groups or users); or someone it names approves",
    "plugin.manage": " (groups or users)",
}
_GLOB_MAGIC: Final = frozenset("*?[\\")
#: Agent and prompt steps: every policy key limits them. A cmd step: only its allowlist.
AGENT_STEP_TYPES: Final = frozenset({"agent", "prompt"})


@dataclass(frozen=True)
class Decision:
    """One authorisation decision: what was asked, by whom, the answer and the rule that gave it."""

    action: str
    subject: str
    allowed: bool
    rule: str
    reason: str
    identity: Identity
    details: Mapping[str, Any] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The ``auth.decision`` event's payload."""
        body: dict[str, Any] = {
            "action": self.action,
            "subject": self.subject,
            "allowed": self.allowed,
            "rule": self.rule,
            "reason": self.reason,
            "user": self.identity.user,
            "groups": list(self.identity.groups),
            "provider": self.identity.provider,
        }
        for key, value in self.details.items():
            if value is None:
                continue
            body[key] = _plain(value)
        return body

    def error(self) -> NotAuthorised:
        """The refusal as the error the CLI prints (exit 6)."""
        setting = _SETTING.get(self.action, SETTINGS_KEY)
        if self.rule == RULE_FOUR_EYES:
            hint = (
                "four-eyes approval: start the run without --approve; someone other than "
                "the person who started it approves it (`bcce workflow resume RUN_ID "
                "--approve` as them)"
            )
        else:
            hint = f"an administrator can allow it in {setting}{_HOW[self.action]}"
        return NotAuthorised(
            f"{describe(self.identity)} may not {_VERB.get(self.action, self.action)} "
            f"{self.subject}: refused by rule '{self.rule}': {self.reason}",
            hint=hint,
            key=setting if self.rule != RULE_FOUR_EYES else RULE_FOUR_EYES,
        )


class Authoriser:
    """Decides :data:`ACTIONS` by the ``auth.authorization`` rules and publishes each decision.

    ``authenticator`` returns the configured authentication provider (the container's
    ``auth.authenticator``), asked afresh on every :meth:`authenticate`.
    """

    def __init__(
        self,
        settings: AuthorizationSettings,
        *,
        bus: EventBus,
        authenticator: Callable[[], AuthenticationProvider] | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self._authenticator = authenticator

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def authenticate(self) -> Identity:
        """Who is running bcce, from the configured provider (the OS user without one).

        A failed login is published as ``auth.failed`` (so the audit trail records it) and
        raised: :class:`~bcce.errors.AuthenticationFailed`, exit 6.
        """
        from bcce.auth.provider import LocalAuthProvider

        provider = LocalAuthProvider() if self._authenticator is None else self._authenticator()
        try:
            return provider.authenticate()
        except AuthenticationFailed as exc:
            from bcce.events.bus import Event

            name = str(getattr(provider, "name", type(provider).__name__))
            self.bus.publish(Event("auth.failed", {"provider": name, "error": exc.message}))
            raise

    def check(self, identity: Identity, action: str, subject: str, **details: Any) -> Decision:
        """:meth:`decide`, raising :class:`NotAuthorised` (exit 6) when it refuses."""
        decision = self.decide(identity, action, subject, **details)
        if not decision.allowed:
            raise decision.error()
        return decision

    def decide(self, identity: Identity, action: str, subject: str, **details: Any) -> Decision:
        """Decide ``action`` on ``subject`` for ``identity`` and publish the decision.

        ``details`` by action: ``workflow.*``: ``path`` (relative to the working directory, or
        None), ``absolute``, ``workflow`` (its name); ``workflow.cancel`` also ``started_by``
        (an :class:`Identity` or None); ``policy.use``: ``step``, ``preset``,
        ``looser_than_default`` and ``looser_than_preset`` (lists of reasons); ``approval.give``:
        ``started_by`` (an :class:`Identity` or None), ``via``; ``plugin.manage``:
        ``operation``. ``run_id`` and ``step`` wherever they are known.
        """
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
        allowed, rule, reason = self._decide(identity, action, details)
        decision = Decision(action, subject, allowed, rule, reason, identity, details)
        self._publish(decision)
        return decision

    # -- the rules ----------------------------------------------------------------------------
    def _decide(
        self, identity: Identity, action: str, details: Mapping[str, Any]
    ) -> tuple[bool, str, str]:
        rules = self.settings
        if not rules.enabled:
            return True, RULE_DISABLED, f"{SETTINGS_KEY}.enabled is false: everything is allowed"
        if action == "approval.give" and rules.approvals.four_eyes:
            refused = _four_eyes(identity, details.get("started_by"))
            if refused is not None:
                return False, RULE_FOUR_EYES, refused
        started_by = details.get("started_by")
        if action == "workflow.cancel" and _started(identity, started_by):
            return True, RULE_STARTED, f"{identity.user} ({identity.provider}) started the run"
        admin = sorted(set(identity.groups) & set(rules.admins))
        if admin:
            return True, RULE_ADMINS, f"{identity.user} is in admin group {admin[0]!r}"
        if action in ("workflow.run", "workflow.resume"):
            return self._workflow(identity, details)
        if action == "workflow.cancel":
            allowed, rule, reason = self._workflow(identity, details)
            if allowed:
                return allowed, rule, reason
            starter = (
                f"it was started by {identity_ref(started_by)}"
                if isinstance(started_by, Identity)
                else "it records no identity that started it"
            )
            return False, rule, f"{identity.user} did not start the run ({starter}); {reason}"
        if action == "policy.use":
            return self._policy(identity, details)
        grantees = rules.approvals if action == "approval.give" else rules.plugins
        setting = _SETTING[action]
        member = _member(identity, grantees.groups, grantees.users)
        if member is not None:
            return True, setting, f"{identity.user} is {member}"
        return False, RULE_NONE, f"{identity.user} is in none of {setting}'s groups or users"

    def _workflow(self, identity: Identity, details: Mapping[str, Any]) -> tuple[bool, str, str]:
        relative = details.get("path")
        absolute = details.get("absolute")
        name = details.get("workflow")
        for index, rule in enumerate(self.settings.workflows):
            member = _member(identity, rule.groups, rule.users)
            if member is None:
                continue
            for pattern in rule.allow:
                if _workflow_matches(pattern, relative, absolute, name):
                    return (
                        True,
                        f"{SETTINGS_KEY}.workflows[{index}]",
                        f"{identity.user} is {member}, and {pattern!r} matches",
                    )
        return (
            False,
            RULE_NONE,
            f"no {SETTINGS_KEY}.workflows rule for {identity.user} matches path "
            f"{relative or absolute!r} or name:{name}",
        )

    def _policy(self, identity: Identity, details: Mapping[str, Any]) -> tuple[bool, str, str]:
        looser = list(details.get("looser_than_default") or [])
        if not looser:
            return True, RULE_NOT_LOOSER, "the step's policy allows nothing policy.default does not"
        preset = details.get("preset")
        beyond_preset = list(details.get("looser_than_preset") or [])
        for index, rule in enumerate(self.settings.policies):
            member = _member(identity, rule.groups, rule.users)
            if member is None:
                continue
            name = f"{SETTINGS_KEY}.policies[{index}]"
            if rule.looser_than_default:
                return True, name, f"{identity.user} is {member}: looser_than_default is true"
            granted = preset is not None and any(
                fnmatch.fnmatchcase(str(preset), p) for p in rule.presets
            )
            if granted and not beyond_preset:
                return True, name, f"{identity.user} is {member}, granted preset {preset!r}"
        why = "; ".join(looser)
        if preset is not None and beyond_preset:
            why += f" (and looser than its preset {preset!r}: {'; '.join(beyond_preset)})"
        # Each reason names what it is looser than (policy.default, policy.cmd_allowlist).
        return False, RULE_NONE, f"looser than allowed without a rule: {why}"

    def _publish(self, decision: Decision) -> None:
        from bcce.events.bus import Event

        log.debug(
            "authorisation: {} {} {} for {}: {} ({})",
            decision.action,
            decision.subject,
            "allowed" if decision.allowed else "refused",
            describe(decision.identity),
            decision.rule,
            decision.reason,
        )
        self.bus.publish(Event("auth.decision", decision.payload()))


# -- what the runner asks ---------------------------------------------------------------------
def authorise_workflow(
    authoriser: Authoriser,
    identity: Identity,
    action: str,
    workflow: Workflow,
    *,
    run_id: str,
    policy: PolicyEngine,
    cwd: Path | None = None,
) -> list[Decision]:
    """Check that ``identity`` may run (or resume) ``workflow`` and the policies of its steps.

    Raises :class:`NotAuthorised` at the first refusal; returns every decision otherwise.
    """
    relative, absolute = workflow_paths(workflow.source, cwd)
    decisions = [
        authoriser.check(
            identity,
            action,
            relative or absolute,
            path=relative,
            absolute=absolute,
            workflow=workflow.name,
            run_id=run_id,
        )
    ]
    for step in workflow.all_steps():
        question = policy_question(step, policy)
        if question is None:
            continue
        subject, preset, looser, beyond = question
        decisions.append(
            authoriser.check(
                identity,
                "policy.use",
                subject,
                run_id=run_id,
                step=step.id,
                preset=preset,
                looser_than_default=looser,
                looser_than_preset=beyond if preset is not None else None,
            )
        )
    return decisions


def authorise_cancel(
    authoriser: Authoriser,
    identity: Identity,
    *,
    run_id: str,
    workflow: Mapping[str, Any],
    started_by: Identity | None,
    cwd: Path | None = None,
) -> Decision:
    """Check that ``identity`` may cancel run ``run_id``: it started the run, is an admin, or a
    ``workflows`` rule allows it the run's workflow (``workflow``: the run state's record of
    it, its ``path`` taken relative to ``cwd`` as when the run is resumed).

    Raises :class:`NotAuthorised` on a refusal.
    """
    source = workflow.get("path")
    here = cwd or Path.cwd()
    relative, absolute = workflow_paths(here / source, here) if source else (None, None)
    return authoriser.check(
        identity,
        "workflow.cancel",
        f"run {run_id}",
        path=relative,
        absolute=absolute,
        workflow=workflow.get("name"),
        run_id=run_id,
        started_by=started_by,
    )


def workflow_paths(source: str | Path, cwd: Path | None = None) -> tuple[str | None, str]:
    """A workflow file's real path relative to ``cwd`` (None outside it) and its absolute one,
    symbolic links resolved: what ``workflows`` rules match."""
    real = Path(os.path.realpath(source))
    here = Path(os.path.realpath(cwd or Path.cwd()))
    relative = real.relative_to(here).as_posix() if real.is_relative_to(here) else None
    return relative, str(real)


def authorise_approval(
    authoriser: Authoriser,
    approval: Approval,
    *,
    started_by: Identity | None,
    run_id: str,
    steps: Iterable[str],
) -> list[Decision]:
    """Check a ``--approve`` given before the run (re)starts, for each apply_diff step it may
    approve. Raises :class:`NotAuthorised` at the first refusal."""
    approver = approver_identity(approval, started_by)
    return [
        authoriser.check(
            approver,
            "approval.give",
            f"step {step_id} of run {run_id}",
            run_id=run_id,
            step=step_id,
            via=approval.via,
            started_by=started_by,
        )
        for step_id in steps
    ]


def policy_question(
    step: Step, policy: PolicyEngine
) -> tuple[str, str | None, list[str], list[str]] | None:
    """What ``policy.use`` asks of ``step``: ``(subject, preset, looser than policy.default,
    looser than its preset)``, or None when the step's type has no policy to authorise (a
    ``cmd`` step without a ``policy``, control steps, ``apply_diff`` and plugin steps)."""
    declared = dict(step.raw.get("policy") or {})
    preset = declared.pop("preset", None)
    preset = str(preset) if preset is not None else None
    if step.type in AGENT_STEP_TYPES:
        chosen = effective_step_policy(policy, declared)
        baseline = effective_step_policy(policy, {})
        looser = looser_than(chosen, baseline, "policy.default")
        beyond: list[str] = []
        if preset is not None:
            beyond = looser_than(chosen, effective_step_policy(policy, _preset(preset)), preset)
    elif step.type == "cmd" and step.raw.get("policy") is not None:
        # A cmd step's own allowlist replaces the organisation's policy.cmd_allowlist.
        org = policy.settings.cmd_allowlist
        own = declared.get("cmd_allowlist")
        chosen_list = list(own) if own is not None else org
        looser = _commands_looser(chosen_list, org, "policy.cmd_allowlist", none_allows_all=True)
        beyond = []
        if preset is not None:
            granted = _preset(preset).get("cmd_allowlist")
            beyond = _commands_looser(
                chosen_list, granted if granted is not None else org, preset, none_allows_all=True
            )
    else:
        return None
    if preset is not None:
        subject = f"preset {preset} (step {step.id})"
    elif step.raw.get("policy") is not None:
        subject = f"the policy of step {step.id}"
    else:
        subject = f"policy.default (step {step.id})"
    return subject, preset, looser, beyond


def effective_step_policy(policy: PolicyEngine, declared: Mapping[str, Any]) -> StepPolicySettings:
    """An agent step's policy as :func:`bcce.steps.agent.effective_policy` makes it: the keys
    it leaves out from ``policy.default``, the organisation's allowlist when it has none."""
    from bcce.settings.model import StepPolicySettings

    default = policy.default_step_policy()
    own = {k: v for k, v in declared.items() if k != "preset" and v is not None}
    merged = {**default.model_dump(), **own}
    if merged.get("cmd_allowlist") is None and policy.settings.cmd_allowlist is not None:
        merged["cmd_allowlist"] = list(policy.settings.cmd_allowlist)
    return StepPolicySettings.model_validate(merged)


def looser_than(
    chosen: StepPolicySettings, baseline: StepPolicySettings, baseline_name: str
) -> list[str]:
    """Everything ``chosen`` allows that ``baseline`` is not proven to allow, in words."""
    found = [
        f"{key} {getattr(chosen, key)} > {getattr(baseline, key)} ({baseline_name})"
        for key in ("timeout_seconds", "max_files", "max_edits")
        if getattr(chosen, key) > getattr(baseline, key)
    ]
    found += [
        f"allowed_paths {glob!r} is not within {baseline_name}'s {baseline.allowed_paths}"
        for glob in chosen.allowed_paths
        if not glob_covered(glob, baseline.allowed_paths)
    ]
    # An agent step without an allowlist may run no command.
    found += _commands_looser(
        chosen.cmd_allowlist, baseline.cmd_allowlist, baseline_name, none_allows_all=False
    )
    return found


def glob_covered(glob: str, baseline: Sequence[str]) -> bool:
    """Whether every path ``glob`` matches is proven to match one of ``baseline``'s globs.

    Sound, not complete: the same glob; ``**``; ``DIR/**`` when ``glob`` starts with the literal
    ``DIR/``; or a ``glob`` without wildcards that a baseline glob matches. ``..`` never counts.
    """
    if ".." in glob.split("/"):
        return False
    for pattern in baseline:
        if pattern in (glob, "**"):
            return True
        if pattern.endswith("/**"):
            directory = pattern[:-2]
            if not (_GLOB_MAGIC & set(directory)) and glob.startswith(directory):
                return True
    if not (_GLOB_MAGIC & set(glob)):
        from wcmatch import glob as wc

        from bcce.policy.paths import GLOB_FLAGS

        return bool(wc.globmatch(glob, list(baseline), flags=GLOB_FLAGS))
    return False


def _commands_looser(
    chosen: Sequence[str] | None,
    baseline: Sequence[str] | None,
    baseline_name: str,
    *,
    none_allows_all: bool,
) -> list[str]:
    """The allowlist entries of ``chosen`` that ``baseline`` does not cover. No allowlist
    (None) allows every command for a cmd step (``none_allows_all``), none for an agent step."""
    if baseline is None and none_allows_all:
        return []
    if chosen is None:
        return [] if not none_allows_all else [f"any command ({baseline_name}: {baseline})"]
    if baseline is None:
        extra, why = list(chosen), f" ({baseline_name} allows no command)"
    else:
        extra = [entry for entry in chosen if not _command_covered(entry, baseline)]
        why = f", which {baseline_name}'s does not"
    return [f"cmd_allowlist allows {', '.join(map(repr, extra))}{why}"] if extra else []


def _command_covered(entry: str, baseline: Sequence[str]) -> bool:
    words = entry.split()
    for allowed in baseline:
        prefix = allowed.split()
        if prefix and words[: len(prefix)] == prefix:
            return True
    return False


def _preset(name: str) -> dict[str, Any]:
    from bcce.policy.presets import load_policy

    return load_policy(name).model_dump(exclude_unset=True)


# -- identities ---------------------------------------------------------------------------------
def describe(identity: Identity) -> str:
    """``ana (local; groups: dev, ops)`` — how messages name an identity."""
    groups = ", ".join(identity.groups) or "none"
    return f"{identity.user} ({identity.provider}; groups: {groups})"


def identity_ref(identity: Identity) -> str:
    """``local:ana`` — how an event's payload names an identity other than its own user
    (``started_by``, ``cancelled_by``)."""
    return f"{identity.provider}:{identity.user}"


def identity_record(identity: Identity) -> dict[str, Any]:
    """An identity as run state records it (``started_by``)."""
    return {"user": identity.user, "groups": list(identity.groups), "provider": identity.provider}


def identity_from_record(record: Mapping[str, Any] | None) -> Identity | None:
    """The identity :func:`identity_record` recorded (None for a run that recorded none)."""
    if not record or not isinstance(record.get("user"), str):
        return None
    return Identity(
        user=record["user"],
        groups=tuple(str(g) for g in record.get("groups") or ()),
        provider=str(record.get("provider") or "unknown"),
    )


def approver_identity(approval: Approval, started_by: Identity | None) -> Identity:
    """Who gave ``approval``.

    The identity it carries (the command line and the terminal set the authenticated one; an
    integration may too); ``approve: true`` in the workflow is the approval of whoever started
    the run; otherwise the user the integration names, with no groups, vouched for by it.
    """
    if approval.identity is not None:
        return approval.identity
    if approval.via == "workflow" and started_by is not None:
        return started_by
    return Identity(
        user=approval.by or "nobody",
        groups=(),
        provider=approval.via,
        attributes={VOUCHED_BY: approval.via},
    )


def same_person(a: Identity, b: Identity) -> bool:
    """Whether ``a`` and ``b`` are one person: the same user of the same provider. A user that
    an integration vouches for (it says only a name) is compared by name alone: failing closed."""
    if a.user != b.user:
        return False
    return a.provider == b.provider or VOUCHED_BY in a.attributes or VOUCHED_BY in b.attributes


def _started(identity: Identity, started_by: Any) -> bool:
    # Unlike four-eyes, a user an integration vouches for by name alone fails closed here by
    # not counting as the starter: only the same user of the same provider does.
    return (
        isinstance(started_by, Identity)
        and VOUCHED_BY not in identity.attributes
        and VOUCHED_BY not in started_by.attributes
        and same_person(identity, started_by)
    )


def _four_eyes(approver: Identity, started_by: Any) -> str | None:
    if not isinstance(started_by, Identity):
        return "the run records no identity that started it, so four-eyes cannot be checked"
    if same_person(approver, started_by):
        return (
            f"{approver.user} ({approver.provider}) started the run; four-eyes approval needs "
            "someone else"
        )
    return None


def _member(identity: Identity, groups: Sequence[str], users: Sequence[str]) -> str | None:
    """How ``identity`` belongs to a rule (``in group 'dev'``, ``user 'ana'``), or None."""
    for group in identity.groups:
        if group in groups:
            return f"in group {group!r}"
    if identity.user in users:
        vouched = identity.attributes.get(VOUCHED_BY)
        return f"user {identity.user!r}" + (f" (as {vouched} reports)" if vouched else "")
    return None


def _workflow_matches(
    pattern: str, relative: str | None, absolute: str | None, name: str | None
) -> bool:
    if pattern.startswith("name:"):
        return name is not None and fnmatch.fnmatchcase(name, pattern[len("name:") :])
    from wcmatch import glob as wc

    from bcce.policy.paths import GLOB_FLAGS

    target = absolute if pattern.startswith("/") else relative
    return target is not None and bool(wc.globmatch(target, pattern, flags=GLOB_FLAGS))


def _plain(value: Any) -> Any:
    if isinstance(value, Identity):
        return identity_ref(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


__all__ = [
    "ACTIONS",
    "Authoriser",
    "Decision",
    "approver_identity",
    "authorise_approval",
    "authorise_cancel",
    "authorise_workflow",
    "describe",
    "effective_step_policy",
    "glob_covered",
    "identity_from_record",
    "identity_record",
    "identity_ref",
    "looser_than",
    "policy_question",
    "same_person",
    "workflow_paths",
]
