"""Secrets in plugin configuration and integration options are redacted like any other."""

from __future__ import annotations

from collections.abc import Callable

from bcce.containers.application import Application


def test_webhook_urls_and_tokens_of_plugins_are_redacted(
    bcce_make_app: Callable[..., Application],
) -> None:
    hook = "https://hooks.example.invalid/services/T000/B000/XXXXSECRET"
    app = bcce_make_app(
        plugins={
            "config": {"anything": {"api_token": "tok-123456789", "channel": "#ops"}},
            # An integration whose type no plugin provides is a configuration error, so the
            # redactor is checked on settings that list none and on one built directly.
        }
    )
    redactor = app.core.redactor()
    assert "tok-123456789" not in redactor.redact("token tok-123456789 here")
    assert "#ops" in redactor.redact("channel #ops")
    from bcce.containers.core import _secrets
    from bcce.settings.model import BcceSettings

    settings = BcceSettings.model_validate(
        {"plugins": {"integrations": [{"type": "notification:slack", "webhook": hook}]}}
    )
    assert hook in _secrets(settings)


def test_config_show_masks_secret_plugin_options(
    bcce_make_app: Callable[..., Application],
) -> None:
    from bcce.settings.render import MASK, effective_config

    app = bcce_make_app(plugins={"config": {"anything": {"api_token": "tok-1", "channel": "#o"}}})
    shown = effective_config(app.settings())["plugins"]["config"]["anything"]
    assert shown == {"api_token": MASK, "channel": "#o"}


def test_config_show_masks_secret_options_of_integration_entries() -> None:
    from bcce.settings.model import BcceSettings
    from bcce.settings.render import MASK, effective_config, sourced_values

    hook = "https://hooks.example.invalid/services/T000/B000/XXXXSECRET"
    settings = BcceSettings.model_validate(
        {"plugins": {"integrations": [{"type": "notification:slack", "webhook": hook}]}}
    )
    entry = effective_config(settings)["plugins"]["integrations"][0]
    assert entry["webhook"] == MASK
    assert entry["type"] == "notification:slack"
    assert all(hook not in str(each.value) for each in sourced_values(settings))
