"""The HTTP JSON API for apps (CONTRACT §3), plus /metrics and health.

Every error body is an RFC 9457 problem (`application/problem+json` with
type, title, status, detail); field errors add an `errors` list naming each
bad field, the way Twilio and Plivo report them. The routes are served by
`connectors.http_server.HttpServer` (`HttpApi.server`), whose own errors
(404, 405, 413, ...) get the same problem bodies.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import asyncpg
import msgspec
import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from smsrouter.connectors.bearer import bearer_credential, unknown_credential
from smsrouter.connectors.cursors import id_cursor, id_of_cursor, key_cursor, key_of_cursor
from smsrouter.connectors.http_server import (
    HEADER_TIMEOUT,
    MAX_CONNECTIONS_PER_IP,
    HttpServer,
    Request,
    Response,
)
from smsrouter.connectors.openapi_schemas import encode as encode_document
from smsrouter.connectors.problems import (
    RETRY_AFTER_STORE,
    field_error_of,
    field_errors,
    in_utc_range,
    iso,
    json_response,
    list_query,
    nul_errors,
    page_limit,
    problem,
    rfc3339,
    server_error,
    store_read,
    store_unavailable,
)
from smsrouter.connectors.send_request import SendRequest, decode_send
from smsrouter.connectors.template_api import (
    create_template,
    get_template,
    list_templates,
    resolve_template,
)
from smsrouter.connectors.webhooks import is_private_address
from smsrouter.router import metrics
from smsrouter.router.accounts import Account, AccountDirectory
from smsrouter.router.admission import (
    MAX_PARTS,
    Admission,
    Draft,
    FieldError,
    Refusal,
    parse_recipient,
    text_parts,
)
from smsrouter.router.auth_throttle import AuthThrottle
from smsrouter.router.intake import ALL_STORED, Intake, KeyTaken
from smsrouter.router.liveness import DatabaseLiveness
from smsrouter.router.messages import Message, utcnow
from smsrouter.router.opt_outs import OptOutList
from smsrouter.router.scheduler import SenderQueueFull
from smsrouter.router.store import balances, queries
from smsrouter.router.store.group_commit import GroupCommit, StoreError
from smsrouter.router.store.ledger import list_ledger
from smsrouter.router.store.numeric import plain
from smsrouter.router.store.operations import IdempotentAnswer, OptOutChange, Unpaid
from smsrouter.router.store.opt_outs import (
    ACCOUNT_SOURCE,
    apply_committed,
    get_opt_out,
    list_opt_outs,
)
from smsrouter.router.store.queries import AcceptedMessage
from smsrouter.sms.text import Encoding

log = structlog.get_logger("http")

MAX_BATCH = 500
# Refusals that are rate limits (CONTRACT §4: HTTP answers them 429), with
# the problem's title when every recipient was refused so.
_RATE_LIMITS = {
    "throughput_exceeded": "Throughput plan exceeded",
    "recipient_velocity": "Too many messages to this recipient",
}

# The parameters of a list without filters of its own (CONTRACT §3).
_PAGE_PARAMETERS = frozenset({"limit", "after"})

# CONTRACT §3: an Idempotency-Key is up to 255 characters.
MAX_IDEMPOTENCY_KEY = 255
MAX_CLIENT_REF = 256
# Seconds a client should wait after a 429 for a full sender queue: one
# long-code token (4 s) is the slowest drain that can free room.
RETRY_AFTER_QUEUE_FULL = 4
# How far ahead a send may be scheduled (Twilio's limit: 35 days), and
# for how long it may wait for delivery: as long.
MAX_SCHEDULE_SECONDS = 35 * 86400
MAX_VALIDITY_SECONDS = MAX_SCHEDULE_SECONDS
# Seconds a request waits for the database (its commit, or a read) before
# it is answered 503 (CONTRACT §11 "A hung database"); [http] request_timeout.
REQUEST_TIMEOUT = 10.0


class RouterServices(Protocol):
    """What the API needs from the running router."""

    accounts: AccountDirectory
    admission: Admission
    intake: Intake
    pool: asyncpg.Pool
    db_liveness: DatabaseLiveness
    # The status writer (it retries through database faults) and this
    # process's opt-out lists, which a change joins as it commits.
    writer: GroupCommit
    opt_outs: OptOutList

    def is_ready(self) -> tuple[bool, dict[str, Any]]: ...


Handler = Callable[[Request, Account], Awaitable[Response]]
ServerHandler = Callable[[Request], Awaitable[Response]]


class HttpApi:
    def __init__(
        self,
        services: RouterServices,
        *,
        max_body_bytes: int = 1 << 20,
        deny_private_callbacks: bool = False,
        request_timeout: float = REQUEST_TIMEOUT,
        header_timeout: float = HEADER_TIMEOUT,
        max_connections_per_ip: int = MAX_CONNECTIONS_PER_IP,
        auth_throttle: AuthThrottle | None = None,
    ) -> None:
        self.services = services
        self.deny_private_callbacks = deny_private_callbacks
        self.request_timeout = request_timeout
        # Failed authentications per source address (CONTRACT §11); the
        # daemon shares one with the SMPP ingress.
        self.auth_throttle = auth_throttle if auth_throttle is not None else AuthThrottle()
        # GET routes answer HEAD too (RFC 9110 §9.3.2).
        self.routes: dict[str, dict[str, ServerHandler]] = {
            "/v1/messages": {
                "POST": self._authed(self.send),
                "GET": self._authed(self.list_messages),
            },
            "/v1/messages/{id}": {"GET": self._authed(self.get_message)},
            "/v1/balance": {"GET": self._authed(self.balance)},
            "/v1/ledger": {"GET": self._authed(self.ledger)},
            "/v1/opt-outs": {"GET": self._authed(self.list_opt_outs)},
            "/v1/opt-outs/{number}": {
                "PUT": self._authed(self.put_opt_out),
                "DELETE": self._authed(self.delete_opt_out),
            },
            "/v1/templates": {
                "POST": self._authed(self.create_template),
                "GET": self._authed(self.list_templates),
            },
            "/v1/templates/{id}": {"GET": self._authed(self.get_template)},
            "/v1/openapi.json": {"GET": self.openapi},
            "/metrics": {"GET": self.metrics},
            "/healthz": {"GET": self.healthz},
            "/readyz": {"GET": self.readyz},
        }
        self.server = HttpServer(
            self.routes,
            max_body_bytes=max_body_bytes,
            error_response=server_error,
            header_timeout=header_timeout,
            max_connections_per_ip=max_connections_per_ip,
        )

        # CONTRACT §3: the document of this API, built once. Imported here:
        # it reads this module's limits.
        from smsrouter.connectors.openapi_public import public_document

        self._openapi = encode_document(public_document())

    # ----------------------------------------------------------- plumbing

    def _authed(self, handler: Handler) -> ServerHandler:
        async def wrapper(request: Request) -> Response:
            key = bearer_credential(request, self.auth_throttle, what="api key", ingress="http")
            if isinstance(key, Response):
                return key
            account = self.services.accounts.by_api_key(key)
            if account is None:
                return unknown_credential(
                    request, self.auth_throttle, what="API key", ingress="http"
                )
            if account.locked:
                return problem(403, "Forbidden", "the account is locked", kind="account-locked")
            if not account.ip_allowed(request.peer):
                return problem(
                    403, "Forbidden", "source address not in the account's allow list",
                    kind="ip-not-allowed",
                )  # fmt: skip
            return await handler(request, account)

        return wrapper

    # ----------------------------------------------------------- /v1/messages

    async def send(self, request: Request, account: Account) -> Response:
        started = time.perf_counter()
        raw = request.body
        key = request.header("idempotency-key")
        request_hash = b""
        if key is not None:
            # CONTRACT §3: a repeat answers what the first answered.
            if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
                return field_errors(
                    [FieldError("Idempotency-Key", "invalid", "1 to 255 characters")]
                )
            # No look-up of the key here: a new key (nearly every request)
            # is taken by the commit that stores the messages, and a repeat
            # finds it taken there and answers what the first answered.
            request_hash = hashlib.sha256(raw).digest()
        req: SendRequest
        try:
            req = decode_send(raw)
        except msgspec.DecodeError:
            # Slow path: tell malformed JSON or a body that is no object
            # (400) from a well-formed body with bad fields (422).
            try:
                doc = msgspec.json.decode(raw)
            except msgspec.DecodeError as exc:
                return problem(400, "Malformed JSON", str(exc), kind="malformed-json")
            if not isinstance(doc, dict):
                return problem(
                    400, "Malformed JSON", "the body must be a JSON object", kind="malformed-json"
                )
            try:
                req = msgspec.convert(doc, SendRequest)
            except msgspec.ValidationError as invalid:
                return field_errors([field_error_of(invalid)])
        nul = nul_errors(raw)
        if nul:
            return field_errors(nul)
        template_id, errors = resolve_template(req, account)
        more, sent, (encoding, parts) = self._validate(req, account)
        errors += more
        if errors:
            return field_errors(errors)

        admission = self.services.admission
        messages: list[tuple[str, Message]] = []
        rejected: list[Refusal] = []
        now = utcnow()
        data_coding = 0 if encoding == "gsm7" else 8
        for to in sent:
            draft = Draft(
                ingress="http", sender=req.from_, to=to, body=req.text or "", encoding=encoding,
                data_coding=data_coding, parts=parts, client_ref=req.client_ref,
                callback_url=req.callback_url, validity=req.validity, send_at=req.send_at,
                kind=req.kind or "transactional", template_id=template_id,
            )  # fmt: skip
            outcome = admission.admit(account, draft, now)
            if isinstance(outcome, Message):
                messages.append((to, outcome))
            elif outcome.field == "from":
                # The sender is the request's, not a recipient's: the whole
                # request is refused as a field error.
                return field_errors([FieldError("from", outcome.code, outcome.detail)])
            elif outcome.code == "invalid_number" and isinstance(req.to, str):
                return field_errors(
                    [FieldError("to", "invalid_number", f"{req.to!r} is not an E.164 number")]
                )
            else:
                rejected.append(outcome)
        for r in rejected:
            metrics.rejected("http", r.code).inc()
        if not messages and key is not None:
            # A repeat whose first was stored may be refused now (its day's
            # limit reached since): it still answers what the first did.
            replayed = await self._replay(account, key, request_hash)
            if replayed is not None:
                return replayed
        if not messages:
            return _none_accepted(rejected)
        accepted = _accepted(messages, rejected)

        # Not a closure over this coroutine's frame: one would make a
        # reference cycle of every request, left to the cycle collector.
        answer_unpaid = _UnpaidAnswer(account, messages, rejected)
        answer = None
        if key is not None:
            answer = IdempotentAnswer(
                account.id, key, request_hash, 202, accepted.body, answer_unpaid.stored,
                from_message=_made_again(messages, rejected),
            )  # fmt: skip
        taken = False
        queue_full: SenderQueueFull | None = None
        unpaid = ALL_STORED
        try:
            # The commit waits at most request_timeout (CONTRACT §11 "A hung
            # database"); a message whose commit lands after the deadline is
            # queued all the same.
            unpaid = await self.services.intake.accept(
                [m for _, m in messages], answer, timeout=self.request_timeout
            )
        except KeyTaken:
            taken = True  # answered below: no await in an except clause
        except TimeoutError:
            return problem(
                503, "Commit timed out",
                f"the message store did not confirm the commit within {self.request_timeout:g} s;"
                " the outcome is unknown: the messages may have been accepted and sent. Retry"
                " with the same Idempotency-Key",
                kind="commit-timeout", code="commit_timeout",
                headers={"Retry-After": str(RETRY_AFTER_STORE)},
            )  # fmt: skip
        except SenderQueueFull as full:
            queue_full = full  # answered below: no await in an except clause
        except StoreError:
            return problem(
                503, "Service unavailable", "the message store is unavailable; nothing was accepted",
                kind="store-unavailable", code="store_unavailable",
                headers={"Retry-After": str(RETRY_AFTER_STORE)},
            )  # fmt: skip
        if queue_full is not None:
            replayed = await self._replay(account, key, request_hash) if key else None
            if replayed is not None:
                return replayed
            return problem(
                429, "Sender queue full",
                f"the queue of sender {req.from_} holds {queue_full.queued_parts} parts;"
                " retry later",
                kind="sender-queue-full", headers={"Retry-After": str(RETRY_AFTER_QUEUE_FULL)},
                code="sender_queue_full",
            )  # fmt: skip
        if taken:
            # A request with the same key committed first: answer what it did.
            assert key is not None
            replayed = await self._replay(account, key, request_hash)
            return replayed if replayed is not None else store_unavailable()
        if unpaid.message_ids:
            if unpaid.limited:
                metrics.rejected("http", "limit_reached").inc(len(unpaid.limited))
            if unpaid.throttled:
                metrics.rejected("http", "throughput_exceeded").inc(len(unpaid.throttled))
            short = len(unpaid.message_ids) - len(unpaid.limited) - len(unpaid.throttled)
            if short:
                metrics.rejected("http", "insufficient_credit").inc(short)
            accepted = answer_unpaid(unpaid)
        metrics.ingress_latency("http").observe(time.perf_counter() - started)
        for _, m in messages:
            if m.id not in unpaid.message_ids:
                log.debug(
                    "message accepted", message_id=str(m.id), account=account.id, ingress="http"
                )
        return accepted

    async def _replay(self, account: Account, key: str, request_hash: bytes) -> Response | None:
        """What the request that took this Idempotency-Key answered, or None
        if no request took it (in the last 24 h)."""
        stored = await store_read(
            queries.idempotent_answer(self.services.pool, account.id, key), self.request_timeout
        )
        if isinstance(stored, Response):
            return stored
        if stored is None:
            return None
        first_hash, status, answered = stored
        if isinstance(answered, AcceptedMessage):
            m = answered
            body = _accepted_body([_accepted_item(m.id, m.to, m.parts, m.encoding, m.price)], [])
        else:
            body = answered
        if first_hash != request_hash:
            return problem(
                422, "Idempotency key reused",
                "this Idempotency-Key was used with another request body",
                kind="idempotency-key-reused",
                errors=[{"field": "Idempotency-Key", "code": "idempotency_key_reused",
                         "detail": "used with another request body"}],
            )  # fmt: skip
        # A stored 422 (nothing could be paid for) is a problem like any other.
        kind = "application/json" if status < 400 else "application/problem+json"
        return Response(status, body, content_type=kind, headers={"Idempotent-Replayed": "true"})

    def _validate(
        self, req: SendRequest, account: Account
    ) -> tuple[list[FieldError], list[str], tuple[Encoding, int]]:
        """Field errors of the request's form, the recipients as sent, and
        the text's encoding and part count (each worked out once). Whether
        the message may go is the admission's (`Admission.admit`)."""
        errors: list[FieldError] = []
        sent = [req.to] if isinstance(req.to, str) else list(req.to)
        if not sent:
            errors.append(FieldError("to", "required", "at least one recipient"))
        elif len(sent) > MAX_BATCH:
            errors.append(FieldError("to", "too_many", f"at most {MAX_BATCH} recipients"))
        elif len(sent) > 1 and not account.verified:
            errors.append(
                FieldError("to", "batch_not_allowed", "unverified accounts send to one recipient")
            )
        # No text: resolve_template named why (no text, a template not filled).
        encoding, parts = text_parts(req.text or "")
        if req.text is None:
            pass
        elif not req.text:
            errors.append(FieldError("text", "required", "text must not be empty"))
        elif parts > MAX_PARTS:
            errors.append(
                FieldError("text", "too_long", f"{parts} parts; at most {MAX_PARTS} allowed")
            )
        if req.callback_url is not None:
            try:
                url = URL(req.callback_url)
            except ValueError:
                url = URL()
            if url.scheme not in ("http", "https") or not url.host:
                errors.append(FieldError("callback_url", "invalid_url", "must be an http(s) URL"))
            elif self.deny_private_callbacks and is_private_address(url.host):
                errors.append(
                    FieldError("callback_url", "private_network", "private addresses are refused")
                )
        if req.validity is not None and not 0 < req.validity <= MAX_VALIDITY_SECONDS:
            errors.append(
                FieldError("validity", "invalid", f"1 to {MAX_VALIDITY_SECONDS} seconds (35 days)")
            )
        if req.client_ref is not None and len(req.client_ref) > MAX_CLIENT_REF:
            errors.append(
                FieldError("client_ref", "too_long", f"at most {MAX_CLIENT_REF} characters")
            )
        if req.send_at is not None:
            if req.send_at.tzinfo is None or not in_utc_range(req.send_at):
                errors.append(
                    FieldError("send_at", "invalid", "an RFC 3339 time with its offset (or Z)")
                )
            else:
                ahead = (req.send_at - utcnow()).total_seconds()
                if ahead > MAX_SCHEDULE_SECONDS:
                    errors.append(FieldError("send_at", "too_far", "at most 35 days ahead"))
        if req.kind is not None and req.kind not in ("transactional", "promotional"):
            errors.append(FieldError("kind", "invalid", "transactional or promotional"))
        return errors, sent, (encoding, parts)

    async def get_message(self, request: Request, account: Account) -> Response:
        try:
            message_id = uuid.UUID(request.match_info["id"])
        except ValueError:
            message_id = None
        if message_id is None:
            return problem(404, "Not found", "no such message", kind="not-found")
        row = await store_read(
            queries.get_message(self.services.pool, message_id, account.id),
            self.request_timeout,
        )
        if isinstance(row, Response):
            return row
        if row is None:
            return problem(404, "Not found", "no such message", kind="not-found")
        shown = _message_json(row)
        shown["events"] = [
            {"at": iso(e["at"]), "status": e["status"], "detail": e["detail"]}
            for e in row["events"]
        ]
        return json_response(200, shown)

    async def list_messages(self, request: Request, account: Account) -> Response:
        """GET /v1/messages: newest first, a page at a time (CONTRACT §3)."""
        query = request.query
        errors: list[FieldError] = []
        unknown = sorted(set(query) - _LIST_PARAMETERS)
        for name in unknown:
            errors.append(FieldError(name, "unknown", "not a parameter of this list"))
        status = query.get("status") or None
        if status is not None and status not in _SHOWN_STATUSES:
            errors.append(FieldError("status", "invalid", "one of " + ", ".join(_SHOWN_STATUSES)))
        since = None
        if query.get("since"):
            since = rfc3339(query["since"])
            if since is None:
                errors.append(FieldError("since", "invalid", "an RFC 3339 time with its offset"))
        limit, limit_error = page_limit(query.get("limit"), DEFAULT_PAGE, MAX_PAGE)
        if limit_error is not None:
            errors.append(limit_error)
        before = None
        if query.get("after"):
            before = _cursor_position(query["after"])
            if before is None:
                errors.append(FieldError("after", "invalid", "not a cursor this API gave"))
        if errors:
            return field_errors(errors)
        rows = await store_read(
            queries.list_messages(
                self.services.pool,
                account.id,
                limit=limit + 1,
                status=status,
                client_ref=query.get("client_ref") or None,
                since=since,
                before=before,
            ),
            self.request_timeout,
        )
        if isinstance(rows, Response):
            return rows
        page, more = rows[:limit], len(rows) > limit
        next_cursor = _cursor(page[-1]["created_at"], page[-1]["id"]) if more else None
        return json_response(
            200, {"messages": [_message_json(r) for r in page], "next": next_cursor}
        )

    async def balance(self, request: Request, account: Account) -> Response:
        found = await store_read(
            balances.balance(self.services.pool, account.id), self.request_timeout
        )
        if isinstance(found, Response):
            return found
        credit, currency = found if found else (Decimal(0), account.currency)
        return json_response(
            200, {"credit": credit, "currency": currency, "credit_limit": account.credit_limit}
        )

    async def ledger(self, request: Request, account: Account) -> Response:
        """GET /v1/ledger: every change of the balance, newest first, a page
        at a time (CONTRACT §6 "Credit")."""
        limit, before, errors = list_query(
            request.query, _PAGE_PARAMETERS, id_of_cursor, DEFAULT_PAGE, MAX_PAGE
        )
        if errors:
            return field_errors(errors)
        entries = await store_read(
            list_ledger(self.services.pool, account.id, limit=limit + 1, before=before),
            self.request_timeout,
        )
        if isinstance(entries, Response):
            return entries
        page, more = entries[:limit], len(entries) > limit
        return json_response(
            200,
            {
                "entries": [e.as_json(with_actor=False) for e in page],
                "next": id_cursor(page[-1].id) if more else None,
            },
        )

    # ----------------------------------------------------------- /v1/opt-outs

    async def list_opt_outs(self, request: Request, account: Account) -> Response:
        """GET /v1/opt-outs: the account's opted-out numbers in number order,
        a page at a time (CONTRACT §6 "Opt-out", §3 lists)."""
        limit, after, errors = list_query(
            request.query, _PAGE_PARAMETERS, key_of_cursor, DEFAULT_PAGE, MAX_PAGE
        )
        if errors:
            return field_errors(errors)
        rows = await store_read(
            list_opt_outs(self.services.pool, account.id, limit=limit + 1, after=after),
            self.request_timeout,
        )
        if isinstance(rows, Response):
            return rows
        page, more = rows[:limit], len(rows) > limit
        return json_response(
            200,
            {
                "opt_outs": [_opt_out_json(r) for r in page],
                "next": key_cursor(page[-1]["number"]) if more else None,
            },
        )

    async def put_opt_out(self, request: Request, account: Account) -> Response:
        """PUT /v1/opt-outs/{e164}: the account opts a number out (source
        'account'): 201 when added, 200 when it was listed already."""
        number = _opt_out_number(request)
        if isinstance(number, Response):
            return number
        changed = await self._change_opt_out(OptOutChange(account.id, number, True, ACCOUNT_SOURCE))
        if isinstance(changed, Response):
            return changed
        entry = await store_read(
            get_opt_out(self.services.pool, account.id, number), self.request_timeout
        )
        if isinstance(entry, Response):
            return entry
        if entry is None:  # lifted by a START committed since: as it stood
            entry = {"number": number, "source": ACCOUNT_SOURCE, "created_at": None}
        return json_response(201 if changed else 200, _opt_out_json(entry))

    async def delete_opt_out(self, request: Request, account: Account) -> Response:
        """DELETE /v1/opt-outs/{e164}: only an entry the account added (CONTRACT
        §6: a subscriber's STOP is lifted only by the subscriber's START)."""
        number = _opt_out_number(request)
        if isinstance(number, Response):
            return number
        changed = await self._change_opt_out(
            OptOutChange(account.id, number, False, ACCOUNT_SOURCE)
        )
        if isinstance(changed, Response):
            return changed
        if changed:
            return Response(204)
        entry = await store_read(
            get_opt_out(self.services.pool, account.id, number), self.request_timeout
        )
        if isinstance(entry, Response):
            return entry
        if entry is None:
            return problem(
                404, "Not found", f"{number} is not on the opt-out list", kind="not-found"
            )
        return problem(
            409, "Conflict",
            f"{number} opted out by {_OPTED_OUT_BY.get(entry['source'], entry['source'])};"
            " only the subscriber's START lifts it",
            kind="opted-out-by-subscriber", source=entry["source"],
        )  # fmt: skip

    async def _change_opt_out(self, change: OptOutChange) -> bool | Response:
        """One change through the status writer, applied to this process's
        list the moment it commits (a send that follows is decided on it).
        The writer retries through database faults: the request waits at
        most request_timeout, and a change that commits later still applies."""
        services = self.services
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def settled(changed: Any, error: StoreError | None) -> None:
            if error is None:
                apply_committed(services.opt_outs, change, bool(changed))
            if not done.done():
                if error is None:
                    done.set_result(bool(changed))
                else:
                    done.set_exception(error)

        services.writer.submit_then(change, settled)
        finished, _ = await asyncio.wait({done}, timeout=self.request_timeout)
        if not finished:
            done.cancel()  # no one to hear how it ends; the list still follows it
            return problem(
                503, "Commit timed out",
                f"the store did not confirm the change within {self.request_timeout:g} s;"
                " it is kept and applied once the database takes it",
                kind="commit-timeout", code="commit_timeout",
                headers={"Retry-After": str(RETRY_AFTER_STORE)},
            )  # fmt: skip
        if done.exception() is not None:
            return store_unavailable()
        return done.result()

    # ----------------------------------------------------------- ops

    async def openapi(self, request: Request) -> Response:
        """GET /v1/openapi.json: no key needed (CONTRACT §3)."""
        return Response(200, self._openapi)

    async def metrics(self, request: Request) -> Response:
        return Response(200, generate_latest(), content_type=CONTENT_TYPE_LATEST)

    async def healthz(self, request: Request) -> Response:
        # Alive unless the database has been unreachable for liveness_seconds:
        # then only a restart of the daemon may help, and an orchestrator
        # restarts on this 503 (CONTRACT §11). No query here: the daemon's
        # probe did it. The error itself is logged, not shown to anyone who
        # can reach this unauthenticated endpoint.
        liveness = self.services.db_liveness
        if liveness.alive():
            return json_response(200, {"status": "ok"})
        down = liveness.unreachable_for()
        return problem(
            503, "Database unreachable",
            f"the database has been unreachable for {down:.0f} s "
            f"(liveness_seconds = {liveness.liveness_seconds:g})",
            kind="database-unreachable", unreachable_seconds=round(down, 1),
        )  # fmt: skip

    async def readyz(self, request: Request) -> Response:
        # 503 at once when the latest database probe failed or no carrier is
        # bound; the body says which: a problem (CONTRACT §3, every error
        # is one) with the members of the 200. As cheap as /healthz.
        ready, detail = self.services.is_ready()
        if ready:
            return json_response(200, {"ready": True, **detail})
        why = "no carrier is bound" if detail.get("database") else "the database is unreachable"
        return problem(503, "Not ready", why, kind="not-ready", ready=False, **detail)

    # ----------------------------------------------------------- /v1/templates

    async def create_template(self, request: Request, account: Account) -> Response:
        return await create_template(self.services.pool, request, account, self.request_timeout)

    async def list_templates(self, request: Request, account: Account) -> Response:
        return await list_templates(self.services.pool, request, account, self.request_timeout)

    async def get_template(self, request: Request, account: Account) -> Response:
        return await get_template(self.services.pool, request, account, self.request_timeout)


def _message_json(row: dict[str, Any]) -> dict[str, Any]:
    """A message as GET /v1/messages shows it (CONTRACT §3), events aside."""
    return {
        "id": str(row["id"]),
        "from": row["sender"],
        "to": row["recipient"],
        "status": row["status"],
        "error_code": row["error_code"],
        "carrier": row["carrier"],
        "parts": row["parts"],
        "encoding": row["encoding"],
        "price": plain(row["price"]),
        "client_ref": row["client_ref"],
        "created_at": iso(row["created_at"]),
        "sent_at": iso(row["sent_at"]),
        "done_at": iso(row["done_at"]),
        "send_at": iso(row["send_at"]),
    }


# GET /v1/messages: its parameters, the statuses it filters on, page sizes.
_LIST_PARAMETERS = frozenset({"status", "client_ref", "since", "limit", "after"})
_SHOWN_STATUSES = (
    "accepted", "queued", "sent", "delivered", "undelivered", "expired", "rejected", "failed",
)  # fmt: skip
DEFAULT_PAGE = 50
MAX_PAGE = 500


def _cursor(created_at: datetime, message_id: uuid.UUID) -> str:
    """Where a page ended, opaque to clients: the last message's creation
    time (microseconds since the epoch) and id."""
    micros = round(created_at.timestamp() * 1_000_000)
    raw = micros.to_bytes(8, "big", signed=True) + message_id.bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_position(cursor: str) -> tuple[datetime, uuid.UUID] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except ValueError:
        return None
    if len(raw) != 24:
        return None
    micros = int.from_bytes(raw[:8], "big", signed=True)
    try:
        at = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=micros)
    except OverflowError:
        return None
    return at, uuid.UUID(bytes=raw[8:])


# Who made an entry other than the account, as a 409 names it.
_OPTED_OUT_BY = {"subscriber": "the subscriber (STOP)", "import": "the operator (an import)"}


def _opt_out_number(request: Request) -> str | Response:
    """The E.164 number of /v1/opt-outs/{e164} ("+" or %2B), as the
    router writes it (the form a send is matched on), or the 422."""
    raw = request.match_info["number"]
    recipient = parse_recipient(raw)
    if recipient is None:
        return field_errors(
            [FieldError("number", "invalid_number", f"{raw!r} is not an E.164 number")]
        )
    return recipient.e164


def _opt_out_json(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": entry["number"],
        "source": entry["source"],
        "created_at": iso(entry["created_at"]),
    }


class _UnpaidAnswer:
    """A request's answer once the commit said which of its messages were
    not stored (CONTRACT §6 "Credit", "Daily thresholds", "Throughput
    plan"): the recipients the balance could not pay for are refused
    `insufficient_credit`, those past the account's daily limit
    `limit_reached`, those over its max_tps `throughput_exceeded` (the last
    two counted over all instances), the others accepted."""

    __slots__ = ("account", "messages", "rejected")

    def __init__(
        self, account: Account, messages: list[tuple[str, Message]], rejected: list[Refusal]
    ) -> None:
        self.account = account
        self.messages = messages
        self.rejected = rejected

    def __call__(self, unpaid: Unpaid) -> Response:
        refused = self.rejected + [
            _not_stored(self.account, unpaid, to, m)
            for to, m in self.messages
            if m.id in unpaid.message_ids
        ]
        paid = [(to, m) for to, m in self.messages if m.id not in unpaid.message_ids]
        return _accepted(paid, refused) if paid else _none_accepted(refused)

    def stored(self, unpaid: Unpaid) -> tuple[int, bytes]:
        """The answer as its Idempotency-Key keeps it."""
        again = self(unpaid)
        return again.status, again.body


def _accepted(messages: list[tuple[str, Message]], rejected: list[Refusal]) -> Response:
    """The 202 of POST /v1/messages (CONTRACT §3)."""
    items = [_accepted_item(m.id, to, m.parts, m.encoding, m.price) for to, m in messages]
    return Response(202, _accepted_body(items, rejected))


def _made_again(messages: list[tuple[str, Message]], rejected: list[Refusal]) -> bool:
    """Whether the 202 is the same bytes when made again from its one stored
    message (`_replay`): nothing rejected, the recipient as stored, the price
    as PostgreSQL gives it back (numeric keeps the scale, not an exponent)."""
    if len(messages) != 1 or rejected:
        return False
    to, m = messages[0]
    return to == m.recipient and "E" not in str(m.price)


def _accepted_item(
    message_id: uuid.UUID, to: str, parts: int, encoding: str, price: Decimal
) -> dict[str, Any]:
    return {
        "id": str(message_id),
        "to": to,
        "status": "accepted",
        "parts": parts,
        "encoding": encoding,
        "price": price,
    }


def _accepted_body(items: list[dict[str, Any]], rejected: list[Refusal]) -> bytes:
    """The body of the 202: the same bytes when a repeat makes it again
    from the stored message (`_replay`)."""
    return json_response(202, {"messages": items, "rejected": [_refusal(r) for r in rejected]}).body


def _not_stored(account: Account, unpaid: Unpaid, to: str, m: Message) -> Refusal:
    """Why the commit did not store a message the rules had admitted."""
    if m.id in unpaid.limited:
        return Refusal(
            to, "limit_reached",
            f"the account's daily limit of {account.daily_limit} messages is reached",
        )  # fmt: skip
    if m.id in unpaid.throttled:
        return Refusal(
            to, "throughput_exceeded",
            f"over the account's {account.max_tps:g} messages per second (all instances);"
            " retry in 1 s",
            retry_after=1.0,
        )  # fmt: skip
    return Refusal(to, "insufficient_credit", f"the balance cannot pay {m.price} for {to}")


def _none_accepted(rejected: list[Refusal]) -> Response:
    """Every recipient refused: a rate limit is a 429 with when to retry
    (CONTRACT §6 "Throughput plan", "velocity"; §4), the rest a 422."""
    throttled = [r for r in rejected if r.code in _RATE_LIMITS]
    if throttled:
        wait = min(r.retry_after for r in throttled)
        return problem(
            429, _RATE_LIMITS[throttled[0].code], throttled[0].detail,
            kind=throttled[0].code.replace("_", "-"),
            rejected=[_refusal(r) for r in rejected],
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )  # fmt: skip
    return _all_rejected(rejected)


def _all_rejected(rejected: list[Refusal]) -> Response:
    """The 422 of a POST /v1/messages none of whose recipients passed (CONTRACT §6)."""
    return problem(
        422, "Message rejected", "; ".join(f"{r.to}: {r.detail}" for r in rejected),
        kind="rejected", rejected=[_refusal(r) for r in rejected],
        errors=[{"field": "to", "code": r.code, "detail": r.detail} for r in rejected],
    )  # fmt: skip


def _refusal(r: Refusal) -> dict[str, str]:
    return {"to": r.to, "code": r.code, "detail": r.detail}
