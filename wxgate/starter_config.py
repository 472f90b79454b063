"""The commented config file `wxgate config init` writes: a starter for a real account
(placeholders `wxgate config check` names), or one ready for the sandbox's default
account. Its own module: it knows the sandbox's values, which `config` must not."""

from __future__ import annotations

import secrets

from wxgate.config import PLACEHOLDER_APPID, PLACEHOLDER_SECRET, WECHAT_API_BASE
from wxgate.sandbox.config import (
    DEFAULT_APPID,
    DEFAULT_CALLBACK_TOKEN,
    DEFAULT_ENCODING_AES_KEY,
    DEFAULT_PORT,
    DEFAULT_SECRET,
)

_STARTER_HEAD = """\
# wxgate's configuration, written by `wxgate config init`. Every setting and its
# default: README.md, "Configuration". WXGATE_* environment variables override this
# file (nested keys joined by "__", e.g. WXGATE_APPS__DEFAULT__SECRET), and secrets
# are better kept there. `wxgate config check` names anything still to do.

[server]
host = "127.0.0.1"
port = 8000                 # the HTTP API and WeChat's callbacks
# `serve --role worker` processes serve /healthz, /readyz and /metrics on any free
# port (logged at start), so any number of them share this host and this file. A
# fixed port instead for a probe (one worker per host or container); -1 for none.
worker_port = 0
# Hashes of the API keys clients send as "Authorization: Bearer <key>": this one is
# of the key `config init` printed; `wxgate keys new` makes more.
api_keys = ["{api_key_hash}"]

[storage]
backend = "sqlite"          # one host; "redis" (and redis_url) for processes on many
sqlite_path = "wxgate.db"

# One section per Official Account; clients name it as "app" (which may be left
# out while there is only one).
"""

_STARTER_SANDBOX_APP = """\
# This is the sandbox's default account: `wxgate sandbox` imitates WeChat on port
# {port}. For a real account, run `wxgate config init --force` without --sandbox.
[apps.default]
appid = "{appid}"
secret = "{secret}"
api_base = "http://127.0.0.1:{port}"    # WeChat itself: {wechat}
callback_token = "{callback_token}"
# Empty: reports in plaintext, as the sandbox sends them by default. For safe mode,
# put the sandbox's key here, {aes_key}, and run
# `wxgate sandbox --callback-mode safe`.
encoding_aes_key = ""
"""

_STARTER_APP = """\
[apps.default]
appid = "{appid}"              # MP console: 设置与开发 > 基本配置
secret = "{secret}"         # better: WXGATE_APPS__DEFAULT__SECRET, and drop this line
# The Token of the console's server configuration (服务器配置), whose URL is
# https://<this host>/wechat/callback/default: made up by `config init`; enter the
# same one there.
callback_token = "{callback_token}"
# The console's EncodingAESKey (43 characters) for safe mode (安全模式); empty for
# plaintext (明文模式). With a key here, plaintext callbacks are refused.
encoding_aes_key = ""
"""


def starter_toml(api_key_hash: str, *, sandbox: bool = False) -> str:
    """The commented file `wxgate config init` writes: for the sandbox's default
    account, or for a real one with placeholders (which `check` names) and a new
    callback token (WeChat's console takes 3-32 letters and digits)."""
    head = _STARTER_HEAD.format(api_key_hash=api_key_hash)
    if not sandbox:
        return head + _STARTER_APP.format(
            appid=PLACEHOLDER_APPID,
            secret=PLACEHOLDER_SECRET,
            callback_token=secrets.token_hex(16),
        )
    return head + _STARTER_SANDBOX_APP.format(
        port=DEFAULT_PORT,
        appid=DEFAULT_APPID,
        secret=DEFAULT_SECRET,
        wechat=WECHAT_API_BASE,
        callback_token=DEFAULT_CALLBACK_TOKEN,
        aes_key=DEFAULT_ENCODING_AES_KEY,
    )
