"""The console's pages and actions under /ui: each reads what the API reads (storage,
`wxgate.operations`, the process's metrics) and renders a Jinja2 template.

A page without a valid session redirects to the sign-in page; an action (a POST)
without one, or without the session's CSRF token in its form, is refused with 403
and changes nothing. No page shows a secret: tokens go through `mask`, callback URLs
through `mask_url`, and API keys never leave the sign-in form.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from wxgate import operations
from wxgate.api.audit import audited, dead_letter_target
from wxgate.api.auth import EVERYTHING, PRINCIPAL, ApiKeys, Principal
from wxgate.api.console.activity import MINUTES, SERIES, ActivityCache
from wxgate.api.console.session import (
    OPEN_TAG,
    SESSION_COOKIE,
    SESSION_TTL_S,
    SIGN_IN_COOKIE,
    SIGN_IN_TTL_S,
    Session,
    SessionCodec,
    csrf_matches,
)
from wxgate.api.errors import ApiError
from wxgate.api.state import ApiState, api_state
from wxgate.backends.base import (
    REPLAYABLE,
    DeadLetterFilter,
    ListFilter,
    MessageRecord,
    Status,
)
from wxgate.clock import rfc3339
from wxgate.observability import mask_url
from wxgate.wechat.tokenstore import mask

UI_PATH = "/ui"
TEMPLATES = Path(__file__).with_name("templates")
PAGE_SIZE = 50
MAX_FORM_BYTES = 4096
REFRESH_S = 10
DEAD_WITHIN_H = {"1": 1, "24": 24, "168": 168}  # "went dead within the last N hours"
BREAKER_STATES = {0.0: "closed", 1.0: "open", 2.0: "half-open"}
# The console's pages load only their own script and stylesheet; no inline code at all.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
NOTICES = {
    "replayed": "{n} message(s) queued again.",
    "resumed": "App {app} resumed.",
    "not-paused": "App {app} was not paused.",
    "signed-out": "Signed out.",
}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = rfc3339
    env.filters["age"] = _age
    env.filters["mask_url"] = mask_url
    return env


class Refused(Exception):
    """An action without a valid session or CSRF token: 403, nothing changed."""


@dataclass(frozen=True, slots=True)
class Console:
    """What the pages share: the key check of the API, the session signer, templates."""

    keys: ApiKeys
    key_hashes: tuple[str, ...]
    codec: SessionCodec
    env: Environment
    activity: ActivityCache

    def valid_tags(self) -> list[str]:
        if self.keys.open:
            return [OPEN_TAG]
        return [self.codec.key_tag(key_hash) for key_hash in self.key_hashes]

    def actor(self, session: Session) -> Principal:
        """Who the audit log names for this session's actions: the config key it signed
        in with, seen through the console."""
        tags = self.valid_tags()
        name = "console"
        if session.key_tag in tags and not self.keys.open:
            name = f"console:config-{tags.index(session.key_tag) + 1}"
        return Principal(name, None, EVERYTHING)

    def session(self, request: Request, now: float) -> Session | None:
        cookie = request.cookies.get(SESSION_COOKIE)
        return self.codec.session(cookie, now, self.valid_tags())

    def render(
        self, request: Request, template: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        base = _root(request) + UI_PATH
        html = self.env.get_template(template).render(base=base, refresh_s=REFRESH_S, **context)
        return _guarded(HTMLResponse(html, status_code=status))


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _guarded(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _is_tls(request: Request) -> bool:
    """https here, or at the proxy in front (X-Forwarded-Proto)."""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=_root(request) + UI_PATH,
        httponly=True,
        samesite="strict",
        secure=_is_tls(request),
    )


def _clear_cookie(request: Request, response: Response, name: str) -> None:
    response.delete_cookie(
        name,
        path=_root(request) + UI_PATH,
        httponly=True,
        samesite="strict",
        secure=_is_tls(request),
    )


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the first of each), at most MAX_FORM_BYTES."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise Refused("form too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[0] for name, values in fields.items()}


def _redirect(request: Request, path: str, **query: Any) -> RedirectResponse:
    url = _root(request) + UI_PATH + path
    shown = {name: value for name, value in query.items() if value not in (None, "")}
    if shown:
        url += "?" + urlencode(shown)
    return RedirectResponse(url, status_code=303)


def _notice(request: Request) -> str | None:
    template = NOTICES.get(request.query_params.get("notice", ""))
    if template is None:
        return None
    n = request.query_params.get("n", "0")
    app = request.query_params.get("app", "")
    return template.format(n=int(n) if n.isdigit() else 0, app=app)


def _status(value: str | None) -> Status | None:
    try:
        return Status(value) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except ValueError:
        return None


def _breaker(state: ApiState, app: str) -> str:
    value = state.metrics.registry.get_sample_value("wxgate_breaker_state", {"app": app})
    return "no worker in this process" if value is None else BREAKER_STATES.get(value, "?")


def _token_fetches(state: ApiState, app: str) -> int:
    total = 0.0
    for family in state.metrics.token_fetches.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("app") == app:
                total += sample.value
    return int(total)


def _chart(minutes: Mapping[str, list[int]]) -> dict[str, Any]:
    """Bars for an inline SVG: per series, (x, height) of each minute on a 0-40 scale."""
    peak = max((max(values) for values in minutes.values()), default=0) or 1
    bars = {
        name: [(i, math.ceil(40 * count / peak), count) for i, count in enumerate(values) if count]
        for name, values in minutes.items()
    }
    return {"peak": peak, "bars": bars, "minutes": MINUTES}


def _message_view(record: MessageRecord) -> dict[str, Any]:
    return {"record": record, "replayable": record.status in REPLAYABLE}


def build_router(console: Console) -> APIRouter:
    router = APIRouter(prefix=UI_PATH, include_in_schema=False)

    def page(handler: Callable[..., Any]) -> Callable[..., Any]:
        """A GET page: signed in, or sent to the sign-in page."""

        async def wrapper(request: Request) -> Response:
            state = api_state(request)
            session = console.session(request, state.clock.now())
            if session is None:
                return _redirect(request, "/login")
            response: Response = await handler(request, state, session)
            return response

        wrapper.__name__ = handler.__name__
        return wrapper

    def action(handler: Callable[..., Any]) -> Callable[..., Any]:
        """A POST: signed in and carrying the session's CSRF token, else 403."""

        async def wrapper(request: Request) -> Response:
            state = api_state(request)
            try:
                session = console.session(request, state.clock.now())
                if session is None:
                    raise Refused("not signed in")
                form = await _form(request)
                if not csrf_matches(session.csrf, form.get("csrf")):
                    raise Refused("the form's CSRF token does not match the session")
            except Refused as exc:
                return console.render(request, "refused.html", 403, reason=str(exc))
            token = PRINCIPAL.set(console.actor(session))  # names it in the audit log
            try:
                response: Response = await handler(request, state, form)
            except ApiError as exc:
                return console.render(request, "refused.html", exc.status, reason=exc.msg)
            finally:
                PRINCIPAL.reset(token)
            return response

        wrapper.__name__ = handler.__name__
        return wrapper

    async def sign_in_page(request: Request, error: str | None = None) -> Response:
        state = api_state(request)
        token, cookie = console.codec.sign_in_token(state.clock.now())
        response = console.render(
            request,
            "login.html",
            401 if error else 200,
            csrf=token,
            error=error,
            open=console.keys.open,
            notice=_notice(request),
        )
        _set_cookie(request, response, SIGN_IN_COOKIE, cookie, SIGN_IN_TTL_S)
        return response

    @router.get("/login")
    async def login_form(request: Request) -> Response:
        return await sign_in_page(request)

    @router.post("/login")
    async def login(request: Request) -> Response:
        state = api_state(request)
        now = state.clock.now()
        try:
            form = await _form(request)
        except Refused as exc:
            return console.render(request, "refused.html", 403, reason=str(exc))
        cookie = request.cookies.get(SIGN_IN_COOKIE)
        if not console.codec.sign_in_token_matches(cookie, form.get("csrf", ""), now):
            return console.render(
                request, "refused.html", 403, reason="the sign-in form expired; load it again"
            )
        tag = _key_tag(console, form.get("api_key", ""), state.clock.monotonic())
        if tag is None:
            return await sign_in_page(request, "That key is not accepted.")
        _, session_cookie = console.codec.issue(tag, now)
        response = _redirect(request, "")
        _set_cookie(request, response, SESSION_COOKIE, session_cookie, SESSION_TTL_S)
        _clear_cookie(request, response, SIGN_IN_COOKIE)
        return response

    @router.post("/logout")
    @action
    async def logout(request: Request, _state: ApiState, _form: dict[str, str]) -> Response:
        response = _redirect(request, "/login", notice="signed-out")
        _clear_cookie(request, response, SESSION_COOKIE)
        return response

    @router.get("")
    @page
    async def overview(request: Request, state: ApiState, session: Session) -> Response:
        now = state.clock.now()
        counts = await state.backend.counts()
        oldest = await state.backend.oldest(Status.QUEUED)
        activity = await console.activity.last_hour(state.backend, now)
        pauses = await state.backend.pauses(now)
        apps = [
            {
                "name": name,
                "pause": pauses.get(name),
                "breaker": _breaker(state, name),
                "rate_limit": app.rate_limit_per_s,
                "sent_last_minute": activity.sent_last_minute.get(name, 0),
            }
            for name, app in state.settings.apps.items()
        ]
        return console.render(
            request,
            "overview.html",
            session=session,
            nav="overview",
            notice=_notice(request),
            now=now,
            counts=counts,
            queued=counts.get(Status.QUEUED, 0),
            oldest_age=None if oldest is None else now - oldest.created_at,
            activity=activity,
            series=SERIES,
            chart=_chart(activity.minutes),
            apps=apps,
        )

    @router.post("/apps/{app}/resume")
    @action
    async def resume(request: Request, state: ApiState, _form: dict[str, str]) -> Response:
        app = request.path_params["app"]
        if app not in state.settings.apps:
            return console.render(request, "refused.html", 404, reason=f"no app {app!r}")
        resumed = await state.backend.resume_app(app, state.clock.now())
        await audited(state, "resume", app, "resumed" if resumed else "was not paused")
        return _redirect(request, "", notice="resumed" if resumed else "not-paused", app=app)

    @router.get("/messages")
    @page
    async def messages(request: Request, state: ApiState, session: Session) -> Response:
        query = request.query_params
        flt = ListFilter(
            status=_status(query.get("status")),
            app=query.get("app") or None,
            touser=query.get("touser") or None,
            batch_id=query.get("batch_id") or None,
        )
        listing = await state.backend.list(flt, PAGE_SIZE, query.get("cursor") or None)
        filters = {
            "status": query.get("status", ""),
            "app": flt.app or "",
            "touser": flt.touser or "",
            "batch_id": flt.batch_id or "",
        }
        next_query = None
        if listing.next_cursor is not None:
            next_query = urlencode({**filters, "cursor": listing.next_cursor})
        return console.render(
            request,
            "messages.html",
            session=session,
            nav="messages",
            statuses=[str(status) for status in Status],
            apps=sorted(state.settings.apps),
            filters=filters,
            items=listing.items,
            next_query=next_query,
        )

    @router.get("/messages/{message_id}")
    @page
    async def message(request: Request, state: ApiState, session: Session) -> Response:
        record = await state.backend.get(request.path_params["message_id"])
        if record is None:
            return console.render(
                request, "refused.html", 404, reason="no such message", session=session
            )
        return console.render(
            request,
            "message.html",
            session=session,
            nav="messages",
            notice=_notice(request),
            **_message_view(record),
        )

    @router.post("/messages/{message_id}/replay")
    @action
    async def replay_one(request: Request, state: ApiState, form: dict[str, str]) -> Response:
        message_id = request.path_params["message_id"]
        done = await operations.replay_messages(state.backend, [message_id], state.clock.now())
        await audited(state, "replay", message_id, f"{done.replayed} replayed")
        if form.get("back") == "dead-letters":
            return _redirect(request, "/dead-letters", notice="replayed", n=done.replayed)
        return _redirect(request, f"/messages/{message_id}", notice="replayed", n=done.replayed)

    def _dead_filter(values: Mapping[str, str], state: ApiState) -> DeadLetterFilter:
        app = values.get("app") or None
        within_h = DEAD_WITHIN_H.get(values.get("within_h", ""))
        return DeadLetterFilter(
            app=app if app in state.settings.apps else None,
            errcode=_int(values.get("errcode")),
            since=None if within_h is None else state.clock.now() - within_h * 3600,
        )

    def _dead_filter_fields(values: Mapping[str, str], flt: DeadLetterFilter) -> dict[str, Any]:
        within = values.get("within_h", "")
        return {
            "app": flt.app or "",
            "errcode": "" if flt.errcode is None else flt.errcode,
            "within_h": within if within in DEAD_WITHIN_H else "",
        }

    @router.get("/dead-letters")
    @page
    async def dead_letters(request: Request, state: ApiState, session: Session) -> Response:
        flt = _dead_filter(request.query_params, state)
        items = await operations.list_dead_letters(state.backend, flt, PAGE_SIZE)
        return console.render(
            request,
            "dead_letters.html",
            session=session,
            nav="dead-letters",
            notice=_notice(request),
            apps=sorted(state.settings.apps),
            filters=_dead_filter_fields(request.query_params, flt),
            within_choices=list(DEAD_WITHIN_H),
            items=items,
        )

    @router.post("/dead-letters/replay")
    @action
    async def replay_matching(request: Request, state: ApiState, form: dict[str, str]) -> Response:
        flt = _dead_filter(form, state)
        done = await operations.replay_dead_letters(state.backend, flt, state.clock.now())
        await audited(state, "replay", dead_letter_target(flt), f"{done.replayed} replayed")
        return _redirect(request, "/dead-letters", notice="replayed", n=done.replayed)

    @router.get("/batches")
    @page
    async def batches(request: Request, state: ApiState, session: Session) -> Response:
        wanted = request.query_params.get("batch_id") or None
        activity = await console.activity.last_hour(state.backend, state.clock.now())
        ids = [wanted] if wanted else activity.batch_ids
        rows = []
        for batch_id in ids:
            counts = await state.backend.batch_counts(batch_id)
            if counts is None:
                continue
            total = sum(counts.values())
            waiting = sum(counts.get(status, 0) for status in (Status.SCHEDULED, Status.QUEUED))
            waiting += counts.get(Status.SENDING, 0)
            rows.append(
                {
                    "id": batch_id,
                    "total": total,
                    "done": total - waiting,
                    "counts": {str(s): n for s, n in counts.items() if n},
                }
            )
        return console.render(
            request,
            "batches.html",
            session=session,
            nav="batches",
            wanted=wanted or "",
            rows=rows,
        )

    @router.get("/tokens")
    @page
    async def tokens(request: Request, state: ApiState, session: Session) -> Response:
        now = state.clock.now()
        store = state.backend.token_store()
        rows = []
        for name, app in state.settings.apps.items():
            cached = await store.load(name)
            rows.append(
                {
                    "name": name,
                    "mode": app.token_mode,
                    "masked": mask(cached.token) if cached else "(none)",
                    "age": None if cached is None else now - cached.fetched_at,
                    "expires_in": None if cached is None else cached.remaining(now),
                    "fetches": _token_fetches(state, name),
                }
            )
        return console.render(request, "tokens.html", session=session, nav="tokens", rows=rows)

    return router


def _key_tag(console: Console, presented: str, monotonic_now: float) -> str | None:
    """The session tag of `presented` if the API's own key check (`ApiKeys.authorize`,
    the key's request budget included) would let it call /v1; None otherwise."""
    try:
        console.keys.authorize(presented or None, monotonic_now)
    except ApiError:
        return None
    if console.keys.open:
        return OPEN_TAG
    index = console.keys.identify(presented)
    return None if index is None else console.codec.key_tag(console.key_hashes[index])
