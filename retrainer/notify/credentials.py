"""Notifier secrets: from the environment or a secrets file, never flags.

The Telegram bot token and chat id; the webhook's URL and secret headers; the
healthchecks ping URL; the Pushgateway's basic-auth user and password. The secrets file
holds `KEY=VALUE` lines with the same names as the environment
(`RETRAINER_TELEGRAM_TOKEN=…`, `RETRAINER_TELEGRAM_CHAT_ID=…`; `#` comments, optional
quotes and `export `), so that one file also serves as a systemd `EnvironmentFile=`. The
environment wins over the file. No error message here ever carries a value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from retrainer.base.errors import BadInputError

TOKEN_ENV = "RETRAINER_TELEGRAM_TOKEN"
CHAT_ID_ENV = "RETRAINER_TELEGRAM_CHAT_ID"
WEBHOOK_URL_ENV = "RETRAINER_WEBHOOK_URL"
# RETRAINER_WEBHOOK_HEADER_AUTHORIZATION="Bearer …" sends `Authorization: Bearer …`.
WEBHOOK_HEADER_PREFIX = "RETRAINER_WEBHOOK_HEADER_"
PING_URL_ENV = "RETRAINER_HEALTHCHECKS_PING_URL"
PUSHGATEWAY_USERNAME_ENV = "RETRAINER_PUSHGATEWAY_USERNAME"
PUSHGATEWAY_PASSWORD_ENV = "RETRAINER_PUSHGATEWAY_PASSWORD"


@dataclass(frozen=True)
class TelegramCredentials:
    token: str = field(repr=False)
    chat_id: str

    def __repr__(self) -> str:  # a credentials object in a traceback shows no token
        return f"TelegramCredentials(token=***, chat_id={self.chat_id!r})"


def load_credentials(
    secrets_file: Path | None, environ: Mapping[str, str] | None = None
) -> TelegramCredentials:
    environ = os.environ if environ is None else environ
    values = read_secrets_file(secrets_file) if secrets_file is not None else {}
    values.update({k: environ[k] for k in (TOKEN_ENV, CHAT_ID_ENV) if environ.get(k)})
    missing = [k for k in (TOKEN_ENV, CHAT_ID_ENV) if not values.get(k)]
    if missing:
        where = f"the environment or {secrets_file}" if secrets_file else "the environment"
        raise BadInputError(f"telegram notifier: {' and '.join(missing)} not set in {where}")
    return TelegramCredentials(token=values[TOKEN_ENV], chat_id=values[CHAT_ID_ENV])


def load_secrets(
    secrets_file: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Every RETRAINER_* value of the secrets file and the environment (which wins)."""
    environ = os.environ if environ is None else environ
    values = read_secrets_file(secrets_file) if secrets_file is not None else {}
    values.update({k: v for k, v in environ.items() if k.startswith("RETRAINER_") and v})
    return values


@dataclass(frozen=True)
class WebhookTarget:
    url: str = field(repr=False)
    headers: Mapping[str, str] = field(repr=False)

    def __repr__(self) -> str:  # a target in a traceback shows neither URL nor headers
        return f"WebhookTarget(url=***, headers={sorted(self.headers)})"


def load_webhook_target(
    url: str | None,
    headers: Mapping[str, str],
    secrets_file: Path | None,
    environ: Mapping[str, str] | None = None,
) -> WebhookTarget:
    """The URL ([notify] url, or RETRAINER_WEBHOOK_URL, which wins) and the headers
    ([notify] headers, then RETRAINER_WEBHOOK_HEADER_<NAME>, which win)."""
    values = load_secrets(secrets_file, environ)
    chosen = values.get(WEBHOOK_URL_ENV) or url
    if not chosen:
        where = f"the environment or {secrets_file}" if secrets_file else "the environment"
        raise BadInputError(
            f"webhook notifier: no [notify] url, and {WEBHOOK_URL_ENV} not set in {where}"
        )
    if not chosen.startswith(("http://", "https://")):
        raise BadInputError(f"webhook notifier: {WEBHOOK_URL_ENV} is not an http(s) URL")
    secret_headers = {
        name[len(WEBHOOK_HEADER_PREFIX) :].replace("_", "-"): value
        for name, value in values.items()
        if name.startswith(WEBHOOK_HEADER_PREFIX) and len(name) > len(WEBHOOK_HEADER_PREFIX)
    }
    return WebhookTarget(url=chosen, headers={**headers, **secret_headers})


def read_secrets_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise BadInputError(f"secrets file {path}: cannot be read ({reason})") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not name.strip():
            # The line may be a bare token: say where, never what.
            raise BadInputError(f"secrets file {path}: line {number} is not NAME=VALUE")
        values[name.strip()] = _unquote(value.strip())
    return values


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
