"""`smsrouter admin ...`: the operator API (CONTRACT §8) from the command line.

A thin client: each command is one request of the operator API over HTTP
(`--all` follows the `next` cursors of a list). It never opens the database,
so that every change goes through the API's checks and its audit log
(CONTRACT §8: "`smsrouter admin ...` on the command line does the same over
this API").

Secrets: the operator token, an SMPP password and a webhook secret are read
from a file, the environment or a prompt and never printed; the only secrets
printed are the ones the API shows once (CONTRACT §8), a new API key and a
new account's webhook secret, and a webhook secret this client generated
(`accounts webhook-secret set-next --generate`).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import http.client
import json
import os
import secrets
import sys
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from smsrouter.router.config import parse_listen

PREFIX = "/admin/v1"
DEFAULT_URL = "http://127.0.0.1:8082"  # CONTRACT §8: [admin] listen defaults to 127.0.0.1:8082
URL_ENV = "SMSROUTER_ADMIN_URL"
TOKEN_ENV = "SMSROUTER_ADMIN_TOKEN"
TIMEOUT = 10.0
PAGE_LIMIT_ALL = 500  # --all without --limit: the largest page the API serves, fewest requests

# Money is a decimal string on the wire (CONTRACT §3, §6): a JSON number is refused.
MONEY_FIELDS = frozenset({"credit_limit"})
# Fields `accounts create` takes from its own arguments, not from --set.
CREATE_OWN_FIELDS = frozenset({"id", "currency", "credit"})
NUMBER_TYPES = ("long_code", "toll_free", "short_code", "alphanumeric")

EXIT_PROBLEM = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class UsageError(Exception):
    """A command line the client cannot turn into a request (exit 2)."""


class Unreachable(Exception):
    """No HTTP answer: connection refused, timeout, name not resolved (exit 3)."""


class AdminRequest(NamedTuple):
    method: str
    path: str
    body: dict[str, Any] | None


class Answer(NamedTuple):
    status: int
    body: Any  # the decoded JSON, the text when it is not JSON, None when empty


# ---------------------------------------------------------------------------
# argv → request


def quote(segment: str) -> str:
    """One path segment, every reserved character escaped ("+" → %2B, "/" → %2F)."""
    return urllib.parse.quote(segment, safe="")


def parse_value(field: str, text: str) -> Any:
    """A --set VALUE: JSON when it parses (true, 5, ["10.0.0.0/8"]), else the text.

    Money fields stay decimal strings as typed: the API refuses a JSON
    number for money (admin_http.md), and a float would round.
    """
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if field in MONEY_FIELDS and not isinstance(value, str):
        return text
    return value


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    """--set FIELD=VALUE ... → {field: value}; a field given twice is a usage error."""
    fields: dict[str, Any] = {}
    for item in items or ():
        field, sep, text = item.partition("=")
        field = field.strip()
        if not sep or not field:
            raise UsageError(f"--set {item!r}: expected FIELD=VALUE")
        if field in fields:
            raise UsageError(f"--set {field}: given twice")
        fields[field] = parse_value(field, text)
    return fields


def with_query(path: str, **params: str | int | None) -> str:
    """`path` with the given query parameters appended (None ones left out)."""
    given = {k: str(v) for k, v in params.items() if v is not None}
    if not given:
        return path
    sep = "&" if "?" in path else "?"
    return path + sep + urllib.parse.urlencode(given, quote_via=urllib.parse.quote)


def _account(account: str, *rest: str) -> str:
    return "/".join((PREFIX, "accounts", quote(account), *rest))


def _page(path: str, args: argparse.Namespace) -> str:
    limit = args.limit
    if limit is None and args.all:
        limit = PAGE_LIMIT_ALL
    return with_query(path, limit=limit, after=args.after)


def _accounts_create(args: argparse.Namespace) -> AdminRequest:
    extra = parse_sets(args.set)
    if own := sorted(CREATE_OWN_FIELDS & extra.keys()):
        raise UsageError(f"--set {own[0]}: use the ID argument, --currency or --credit")
    body: dict[str, Any] = {"id": args.id}
    if args.currency is not None:
        body["currency"] = args.currency
    if args.credit is not None:
        body["credit"] = args.credit
    return AdminRequest("POST", f"{PREFIX}/accounts", {**body, **extra})


def _accounts_show(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("GET", _account(args.id), None)


def _accounts_list(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("GET", _page(f"{PREFIX}/accounts", args), None)


def _accounts_patch(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("PATCH", _account(args.id), parse_sets(args.set))


def _accounts_lock(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("PATCH", _account(args.id), {"locked": True, "lock_reason": args.reason})


def _accounts_unlock(args: argparse.Namespace) -> AdminRequest:
    # The API clears lock_reason when an account is unlocked.
    return AdminRequest("PATCH", _account(args.id), {"locked": False})


def _webhook_secret_show(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("GET", _account(args.id, "webhook-secret"), None)


def _webhook_secret_set_next(args: argparse.Namespace, secret: str | None) -> AdminRequest:
    if secret is None:
        raise UsageError(
            "webhook-secret set-next: no secret (--secret-file FILE, --generate, "
            "or typed at the prompt)"
        )
    return AdminRequest("PUT", _account(args.id, "webhook-secret"), {"next": secret})


def _webhook_secret_promote(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("POST", _account(args.id, "webhook-secret", "promote"), None)


def _webhook_secret_clear_next(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("DELETE", _account(args.id, "webhook-secret", "next"), None)


def _keys_create(args: argparse.Namespace) -> AdminRequest:
    body: dict[str, Any] = {"name": args.name}
    if args.expires_at is not None:
        body["expires_at"] = args.expires_at
    return AdminRequest("POST", _account(args.account, "api-keys"), body)


def _keys_list(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("GET", _account(args.account, "api-keys"), None)


def _keys_revoke(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("DELETE", _account(args.account, "api-keys", quote(args.key_id)), None)


def _smpp_set(args: argparse.Namespace, password: str | None) -> AdminRequest:
    if password is None:
        raise UsageError("smpp set: no password (--password-file FILE, or typed at the prompt)")
    body: dict[str, Any] = {
        "system_id": args.system_id,
        "password": password,
        "max_binds": args.max_binds,
    }
    if args.allowed_ip is not None:
        body["allowed_ips"] = args.allowed_ip
    return AdminRequest("PUT", _account(args.account, "smpp"), body)


def _credit_add(args: argparse.Namespace) -> AdminRequest:
    # The amount goes as the decimal string typed (CONTRACT §6: money is never rounded).
    body = {"amount": args.amount, "reference": args.reference}
    return AdminRequest("POST", _account(args.account, "credit"), body)


def _ledger(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("GET", _page(_account(args.account, "ledger"), args), None)


def _numbers_put(args: argparse.Namespace) -> AdminRequest:
    body: dict[str, Any] = {"account": args.account, "type": args.type}
    if args.rate is not None:
        body["rate"] = args.rate
    return AdminRequest("PUT", f"{PREFIX}/numbers/{quote(args.number)}", body)


def _numbers_delete(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("DELETE", f"{PREFIX}/numbers/{quote(args.number)}", None)


def _numbers_list(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("GET", _page(f"{PREFIX}/numbers", args), None)


def _sender_ids_put(args: argparse.Namespace) -> AdminRequest:
    path = _account(args.account, "sender-ids", quote(args.sender_id))
    return AdminRequest("PUT", path, {"countries": args.country})


def _sender_ids_delete(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("DELETE", _account(args.account, "sender-ids", quote(args.sender_id)), None)


def _sender_ids_list(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("GET", _account(args.account, "sender-ids"), None)


def _senders_list(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("GET", with_query(_page(f"{PREFIX}/senders", args), state=args.state), None)


def _senders_resume(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("POST", f"{PREFIX}/senders/{quote(args.number)}/resume", None)


def _templates_list(args: argparse.Namespace) -> AdminRequest:
    path = with_query(f"{PREFIX}/templates", status=args.status, account=args.account)
    return AdminRequest("GET", _page(path, args), None)


def _templates_approve(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("POST", f"{PREFIX}/templates/{quote(args.id)}/approve", None)


def _templates_reject(args: argparse.Namespace) -> AdminRequest:
    path = f"{PREFIX}/templates/{quote(args.id)}/reject"
    return AdminRequest("POST", path, {"reason": args.reason})


def _audit(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest("GET", _page(f"{PREFIX}/audit", args), None)


def _opt_outs_list(args: argparse.Namespace) -> AdminRequest:
    return AdminRequest(
        "GET", _page(with_query(f"{PREFIX}/opt-outs", account=args.account), args), None
    )


def opt_outs_import_path(account: str) -> str:
    return _account(account, "opt-outs", "import")


_BUILDERS: Mapping[str, Callable[[argparse.Namespace], AdminRequest]] = {
    "accounts create": _accounts_create,
    "accounts show": _accounts_show,
    "accounts list": _accounts_list,
    "accounts patch": _accounts_patch,
    "accounts lock": _accounts_lock,
    "accounts unlock": _accounts_unlock,
    "accounts webhook-secret show": _webhook_secret_show,
    "accounts webhook-secret promote": _webhook_secret_promote,
    "accounts webhook-secret clear-next": _webhook_secret_clear_next,
    "keys create": _keys_create,
    "keys list": _keys_list,
    "keys revoke": _keys_revoke,
    "credit add": _credit_add,
    "ledger": _ledger,
    "numbers put": _numbers_put,
    "numbers delete": _numbers_delete,
    "numbers list": _numbers_list,
    "sender-ids put": _sender_ids_put,
    "sender-ids delete": _sender_ids_delete,
    "sender-ids list": _sender_ids_list,
    "templates list": _templates_list,
    "templates approve": _templates_approve,
    "templates reject": _templates_reject,
    "audit": _audit,
    "opt-outs list": _opt_outs_list,
    "senders list": _senders_list,
    "senders resume": _senders_resume,
}


SET_NEXT = "accounts webhook-secret set-next"


def build_request(
    args: argparse.Namespace, *, password: str | None = None, secret: str | None = None
) -> AdminRequest:
    """The one request (method, path, body | None) a parsed command line stands for.

    Pure: `password` is the SMPP password of `smpp set` and `secret` the
    webhook secret of `accounts webhook-secret set-next`, read by the
    caller (`read_password`, `read_webhook_secret`) so that neither ever
    comes from argv.
    """
    if args.admin_action == "smpp set":
        return _smpp_set(args, password)
    if args.admin_action == SET_NEXT:
        return _webhook_secret_set_next(args, secret)
    return _BUILDERS[args.admin_action](args)


# ---------------------------------------------------------------------------
# Connection settings and secrets


def _read_secret_file(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the {what} file {path}: {exc}") from None


def token_of(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """The operator token: --token-file, --token, else $SMSROUTER_ADMIN_TOKEN."""
    if args.token_file is not None and args.token is not None:
        raise UsageError("give --token-file or --token, not both")
    if args.token_file is not None:
        token = _read_secret_file(args.token_file, "token").strip()
        if not token:
            raise UsageError(f"the token file {args.token_file} is empty")
        return token
    token = (args.token or environ.get(TOKEN_ENV, "")).strip()
    if not token:
        raise UsageError(
            f"no operator token: pass --token-file FILE or set {TOKEN_ENV} "
            "(a token of the config's [admin] tokens)"
        )
    return token


def _url_of_listen(listen: str) -> str:
    host, port = parse_listen(listen)
    if port == 0:
        raise UsageError(f"[admin] listen {listen!r} takes a port chosen at start: pass --url")
    # A wildcard listen address is reached on the loopback of the same family.
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def url_of_config(path: str) -> str:
    """http://host:port of the file's `[admin] listen` (its default when unset).

    The file is read as TOML only, not validated: this client needs one key.
    """
    try:
        raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    admin = raw.get("admin", {})
    listen = admin.get("listen") if isinstance(admin, dict) else None
    if listen is None:
        return DEFAULT_URL
    if not isinstance(listen, str):
        raise UsageError(f"{path}: [admin] listen: expected host:port")
    try:
        return _url_of_listen(listen)
    except ValueError as exc:
        raise UsageError(f"{path}: [admin] listen: {exc}") from None


def url_of(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    """--url, else --config's [admin] listen, else $SMSROUTER_ADMIN_URL, else the default."""
    if args.url:
        url = str(args.url)
    elif args.config:
        url = url_of_config(args.config)
    else:
        url = environ.get(URL_ENV) or DEFAULT_URL
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"--url {url!r}: expected http://host:port or https://host:port")
    return url.rstrip("/")


def read_password(args: argparse.Namespace) -> str:
    """The SMPP password of `smpp set`: --password-file, else typed at a prompt."""
    if args.password_file is not None:
        # Only the line end is dropped: spaces may belong to a password.
        return _read_secret_file(args.password_file, "password").rstrip("\r\n")
    try:
        return getpass.getpass("SMPP password: ")
    except EOFError:
        raise UsageError("smpp set: no password typed") from None


# Bytes of a generated webhook secret: 32 random bytes, 43 URL-safe
# characters, as the API generates for a new account.
GENERATED_SECRET_BYTES = 32


def read_webhook_secret(args: argparse.Namespace) -> str:
    """The next webhook secret of `set-next`: --generate, --secret-file,
    else typed at a prompt (twice, as a new password is)."""
    if args.generate:
        if args.secret_file is not None:
            raise UsageError("give --generate or --secret-file, not both")
        return secrets.token_urlsafe(GENERATED_SECRET_BYTES)
    if args.secret_file is not None:
        return _read_secret_file(args.secret_file, "secret").rstrip("\r\n")
    try:
        typed = getpass.getpass("next webhook secret: ")
        again = getpass.getpass("again: ")
    except EOFError:
        raise UsageError("webhook-secret set-next: no secret typed") from None
    if typed != again:
        raise UsageError("webhook-secret set-next: the two secrets typed differ")
    return typed


def with_generated(answer: Answer, secret: str) -> Answer:
    """A set-next answer with the secret this client generated, shown this
    once: the operator hands it to the account's receiver."""
    if not 200 <= answer.status < 300 or not isinstance(answer.body, dict):
        return answer
    return Answer(answer.status, {**answer.body, "next_secret": secret})


# ---------------------------------------------------------------------------
# Transport


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is shown as the answer it is: following it would send the
    token to wherever the Location points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class Transport:
    """JSON over HTTP to one operator API, with the token, standard library only."""

    def __init__(self, base_url: str, token: str, *, timeout: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.timeout = TIMEOUT if timeout is None else timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:  # never the token
        return f"Transport({self.base_url!r})"

    def send(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Answer:
        if body is None:
            return self.send_bytes(method, path)
        return self.send_bytes(method, path, json.dumps(body).encode(), "application/json")

    def send_bytes(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        content_type: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Answer:
        """One request with this body as is (a text/plain import, say)."""
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Accept": "application/json",
            "User-Agent": "smsrouter-admin",
        }
        if content_type is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as resp:
                return Answer(resp.status, _decode(resp.read()))
        except urllib.error.HTTPError as exc:
            try:
                return Answer(exc.code, _decode(exc.read()))
            finally:
                exc.close()
        except urllib.error.URLError as exc:
            raise Unreachable(f"{self.base_url}: {_reason(exc.reason)}") from None
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"{self.base_url}: {_reason(exc)}") from None


def _reason(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "no answer (timed out)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(reason) or type(reason).__name__


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def items_key(body: Any) -> str | None:
    """The list's name in a list answer ({"accounts": [...], "next": ...}):
    its one key besides `next`, holding a list (an object with a list field,
    such as a sender ID's countries, is not one)."""
    if not isinstance(body, dict):
        return None
    keys = [k for k in body if k != "next"]
    return keys[0] if len(keys) == 1 and isinstance(body[keys[0]], list) else None


def fetch_all(transport: Transport, request: AdminRequest) -> Answer:
    """Every page of a list, following `next` cursors, as one answer with
    `next` null; the first answer that is not a 200 page ends it."""
    answer = transport.send(request.method, request.path, request.body)
    key = items_key(answer.body)
    if answer.status != 200 or key is None:
        return answer
    items: list[Any] = list(answer.body[key])
    seen: set[str] = set()
    cursor = answer.body.get("next")
    while cursor:
        if cursor in seen:  # a server answering the same cursor again would loop forever
            break
        seen.add(cursor)
        page = transport.send("GET", with_query(_without_after(request.path), after=cursor))
        if page.status != 200 or items_key(page.body) != key:
            return page
        items.extend(page.body[key])
        cursor = page.body.get("next")
    return Answer(200, {key: items, "next": None})


def _without_after(path: str) -> str:
    base, _, query = path.partition("?")
    kept = [(k, v) for k, v in urllib.parse.parse_qsl(query) if k != "after"]
    return with_query(base, **dict(kept))


# ---------------------------------------------------------------------------
# Output

# The columns of `--output table`, per list: the ones that name a row.
TABLE_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "accounts": ("id", "currency", "credit", "credit_limit", "verified", "locked", "lock_reason"),
    "api_keys": ("key_id", "name", "created_at", "last_used_at", "expires_at", "managed_by_config"),
    # Ledger and audit entries share the name; each shows the columns it has.
    "entries": (
        *("id", "at", "kind", "amount", "balance", "message_id", "messages", "reference"),
        *("actor", "action", "target"),
    ),
    "numbers": ("number", "account", "type", "rate"),
    "sender_ids": ("sender_id", "countries"),
    "opt_outs": ("account", "number", "source", "created_at"),
    "senders": ("number", "account", "state", "opt_outs", "recipients", "rate", "since"),
    "templates": ("id", "account", "name", "status", "kind", "text", "reason"),
}
CELL_WIDTH = 60


def cell(value: Any, width: int | None = CELL_WIDTH) -> str:
    """One value on one line: lists comma-joined, objects as compact JSON."""
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, list):
        text = ",".join(cell(v, None) for v in value)
    elif isinstance(value, dict):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    else:
        text = str(value)
    text = " ".join(text.splitlines())
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def columns_of(key: str, rows: Sequence[Mapping[str, Any]]) -> list[str]:
    present: dict[str, None] = {}
    for row in rows:
        present.update(dict.fromkeys(row))
    chosen = [c for c in TABLE_COLUMNS.get(key, ()) if c in present]
    return chosen or list(present)


def format_rows(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = [list(header), *(list(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def format_table(body: Any) -> str:
    """A list answer as a table of its rows; an object as FIELD VALUE lines."""
    key = items_key(body)
    if key is not None:
        rows = [r for r in body[key] if isinstance(r, dict)]
        header = columns_of(key, rows)
        return format_rows(header, ([cell(r.get(c)) for c in header] for r in rows))
    if isinstance(body, dict):
        return format_rows(("field", "value"), ([k, cell(v, None)] for k, v in body.items()))
    return format_json(body)


def format_json(body: Any) -> str:
    return json.dumps(body, indent=2, ensure_ascii=False)


def problem_lines(answer: Answer) -> list[str]:
    """`error <status> <code>: <detail>`, then one line per field error (RFC 9457 body)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    code = body.get("code") or "http_error"
    detail = body.get("detail") or body.get("title")
    if detail is None:
        detail = cell(answer.body, 200) if answer.body is not None else "(no body)"
    lines = [f"error {answer.status} {code}: {detail}"]
    for error in body.get("errors") or ():
        if isinstance(error, dict):
            lines.append(f"  {error.get('field')} {error.get('code')}: {error.get('detail')}")
    return lines


def show(answer: Answer, output: str) -> int:
    """Print an answer: the body on stdout, a problem on stderr; the exit code."""
    if not 200 <= answer.status < 300:
        for line in problem_lines(answer):
            print(line, file=sys.stderr)
        return EXIT_PROBLEM
    if answer.body is None:
        return 0
    if output == "table":
        print(format_table(answer.body))
        if isinstance(answer.body, dict) and answer.body.get("next"):
            print(f"next: {answer.body['next']} (--after it, or --all)", file=sys.stderr)
    else:
        print(format_json(answer.body))
    return 0


# ---------------------------------------------------------------------------
# opt-outs import: a file of any length, in requests of IMPORT_CHUNK lines

# Lines per request: half of what the API takes in one (MAX_IMPORT_LINES),
# so that a request stays well inside the API's time and body limits.
IMPORT_CHUNK = 50_000
# Seconds one import request may take (its COPY and INSERT included).
IMPORT_TIMEOUT = 120.0
MAX_INVALID_SHOWN = 100


def import_chunks(lines: Iterable[str], size: int = IMPORT_CHUNK) -> Iterable[tuple[int, str]]:
    """The file's lines in chunks of `size`, each as (the number of lines
    before it, its text): the API's line numbers are the chunk's own."""
    chunk: list[str] = []
    before = 0
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) == size:
            yield before, "\n".join(chunk) + "\n"
            before += size
            chunk = []
    if chunk:
        yield before, "\n".join(chunk) + "\n"


class ImportTotals:
    """What the import requests answered, added up; line numbers are the file's."""

    def __init__(self) -> None:
        self.received = 0
        self.added = 0
        self.invalid: list[dict[str, Any]] = []
        self.invalid_count = 0
        self.requests = 0

    def add(self, before: int, answer: Mapping[str, Any]) -> None:
        self.requests += 1
        self.received += int(answer.get("received", 0))
        self.added += int(answer.get("added", 0))
        shown = answer.get("invalid") or []
        self.invalid_count += int(answer.get("invalid_count", len(shown)))
        for entry in shown:
            if len(self.invalid) < MAX_INVALID_SHOWN and isinstance(entry, dict):
                self.invalid.append({"line": before + int(entry["line"]), "value": entry["value"]})

    def as_json(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "added": self.added,
            "invalid": self.invalid,
            "invalid_count": self.invalid_count,
            "requests": self.requests,
        }


def _open_list(path: str) -> Any:
    if path == "-":
        return contextlib.nullcontext(sys.stdin)
    try:
        return open(path, encoding="utf-8", errors="replace", newline="")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def run_import(transport: Transport, account: str, path: str, output: str) -> int:
    """`opt-outs import ACCOUNT FILE`: every chunk of the file, in order;
    the totals on stdout. A problem answered stops the import (what the
    earlier chunks added stays) and is shown with the totals so far."""
    totals = ImportTotals()
    target = opt_outs_import_path(account)
    answer: Answer | None = None
    with _open_list(path) as lines:
        for before, text in import_chunks(lines):
            answer = transport.send_bytes(
                "POST", target, text.encode(), "text/plain; charset=utf-8",
                timeout=IMPORT_TIMEOUT,
            )  # fmt: skip
            if answer.status != 200 or not isinstance(answer.body, dict):
                break
            totals.add(before, answer.body)
            answer = None
    if answer is not None:
        if totals.requests:
            print(f"imported before the error: {json.dumps(totals.as_json())}", file=sys.stderr)
        return show(answer, "json")
    return show(Answer(200, totals.as_json()), output)


# ---------------------------------------------------------------------------
# The command


def cmd_admin(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    try:
        url = url_of(args, environ)
        token = token_of(args, environ)
        password = read_password(args) if args.admin_action == "smpp set" else None
        secret = read_webhook_secret(args) if args.admin_action == SET_NEXT else None
        request = (
            AdminRequest("POST", opt_outs_import_path(args.account), None)
            if args.admin_action == "opt-outs import"
            else build_request(args, password=password, secret=secret)
        )
    except UsageError as exc:
        print(f"smsrouter admin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    transport = Transport(url, token)
    try:
        if args.admin_action == "opt-outs import":
            return run_import(transport, args.account, args.file, args.output)
        answer = fetch_all(transport, request) if args.all else transport.send(*request)
        if secret is not None and args.generate:
            answer = with_generated(answer, secret)
    except Unreachable as exc:
        print(f"smsrouter admin: cannot reach the operator API at {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except UsageError as exc:  # the import's file
        print(f"smsrouter admin: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return show(answer, args.output)


def _connection_options(p: argparse.ArgumentParser, *, on_leaf: bool) -> None:
    """The options every admin command takes, before or after its words.

    On the leaves their default is SUPPRESS, so that one given before the
    command is kept when it is not given again after it.
    """

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if on_leaf else value

    p.add_argument(
        "--url",
        default=d(None),
        help=f"the operator API (default: --config's [admin] listen, else ${URL_ENV}, "
        f"else {DEFAULT_URL})",
    )
    p.add_argument("--config", default=d(None), help="take the URL from this file's [admin] listen")
    p.add_argument(
        "--token-file",
        default=d(None),
        metavar="FILE",
        help=f"file holding the operator token (else ${TOKEN_ENV})",
    )
    p.add_argument(
        "--token",
        default=d(None),
        help="the operator token itself: visible to other users in the process list; "
        "prefer --token-file or the environment",
    )
    p.add_argument(
        "--output",
        choices=["json", "table"],
        default=d("json"),
        help="json (default): the answer as is; table: lists as rows",
    )


def _list_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--limit", type=int, help="entries per page (1..500, the API's default 100)")
    p.add_argument("--after", metavar="CURSOR", help="the page after this `next` cursor")
    p.add_argument("--all", action="store_true", help="every page, following `next`")


class _Leaves:
    """Adds the leaf parsers, each with the connection options and its action name."""

    def __init__(self, common: argparse.ArgumentParser) -> None:
        self.common = common

    def add(self, sub: Any, name: str, action: str, help: str) -> argparse.ArgumentParser:
        # No abbreviations: `--password` must not stand for `--password-file`.
        p: argparse.ArgumentParser = sub.add_parser(
            name, help=help, parents=[self.common], allow_abbrev=False
        )
        p.set_defaults(admin_action=action, all=False, limit=None, after=None)
        return p


def _add_accounts(sub: Any, leaves: _Leaves) -> None:
    accounts = sub.add_parser("accounts", help="accounts (CONTRACT §6, §8)")
    acc = accounts.add_subparsers(dest="accounts_command", required=True, metavar="COMMAND")
    sets = "FIELD=VALUE"
    set_help = "a field of the account; VALUE as JSON when it parses (true, 5, [...]), else text"

    p = leaves.add(
        acc, "create", "accounts create", "create an account (prints its webhook secret once)"
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("--currency", help="3 letters (the API's default EUR)")
    p.add_argument("--credit", metavar="AMOUNT", help="initial credit, a decimal string")
    p.add_argument("--set", action="append", metavar=sets, help=set_help)

    p = leaves.add(acc, "show", "accounts show", "one account")
    p.add_argument("id", metavar="ID")

    p = leaves.add(acc, "list", "accounts list", "the accounts, by id")
    _list_options(p)

    p = leaves.add(acc, "patch", "accounts patch", "change fields of an account")
    p.add_argument("id", metavar="ID")
    p.add_argument("--set", action="append", required=True, metavar=sets, help=set_help)

    p = leaves.add(acc, "lock", "accounts lock", "lock an account (CONTRACT §6 Account state)")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", required=True, metavar="TEXT")

    p = leaves.add(acc, "unlock", "accounts unlock", "unlock an account")
    p.add_argument("id", metavar="ID")

    _add_webhook_secret(acc, leaves)


class _RefusedSecret(argparse.Action):
    """`--secret X`: refused without echoing X, as `--password` is."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            "a secret is never taken from the command line: use --secret-file FILE, "
            "--generate or type it at the prompt"
        )


def _add_webhook_secret(acc: Any, leaves: _Leaves) -> None:
    """`accounts webhook-secret ...`: a rotation of the secret that signs an
    account's callbacks (CONTRACT §3): set-next, then promote (or clear-next)."""
    hook = acc.add_parser(
        "webhook-secret", help="rotate the secret that signs an account's webhooks"
    )
    w = hook.add_subparsers(dest="webhook_secret_command", required=True, metavar="COMMAND")
    p = leaves.add(
        w, "show", "accounts webhook-secret show", "fingerprints of the current and next secret"
    )
    p.add_argument("id", metavar="ID")

    p = leaves.add(
        w, "set-next", SET_NEXT, "a second secret: callbacks are signed with both from now on"
    )
    p.add_argument("id", metavar="ID")
    p.add_argument("--secret", action=_RefusedSecret, help=argparse.SUPPRESS)
    p.add_argument(
        "--secret-file",
        metavar="FILE",
        help="file holding the secret (else --generate or prompted)",
    )
    p.add_argument(
        "--generate", action="store_true", help="make a random secret and print it (once)"
    )

    p = leaves.add(
        w, "promote", "accounts webhook-secret promote", "the next secret becomes the only one"
    )
    p.add_argument("id", metavar="ID")

    p = leaves.add(w, "clear-next", "accounts webhook-secret clear-next", "call a rotation off")
    p.add_argument("id", metavar="ID")


def _add_keys(sub: Any, leaves: _Leaves) -> None:
    keys = sub.add_parser("keys", help="an account's API keys")
    k = keys.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    p = leaves.add(k, "create", "keys create", "a new API key (printed once, never again)")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("--name", required=True)
    p.add_argument("--expires-at", metavar="RFC3339", help="e.g. 2026-01-01T00:00:00Z")

    p = leaves.add(k, "list", "keys list", "key ids, names, created, last used")
    p.add_argument("account", metavar="ACCOUNT")

    p = leaves.add(k, "revoke", "keys revoke", "revoke a key")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("key_id", metavar="KEY_ID")


class _RefusedPassword(argparse.Action):
    """`--password X`: refused without echoing X, which the process list
    has shown already; the password comes from a file or the prompt."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        parser.error(
            "a password is never taken from the command line: use --password-file FILE or type it at the prompt"
        )


def _add_smpp(sub: Any, leaves: _Leaves) -> None:
    smpp = sub.add_parser("smpp", help="an account's SMPP credentials")
    s = smpp.add_subparsers(dest="smpp_command", required=True, metavar="COMMAND")
    p = leaves.add(s, "set", "smpp set", "set system_id, password and binds")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("--system-id", required=True)
    p.add_argument("--max-binds", type=int, required=True, metavar="N")
    p.add_argument("--allowed-ip", action="append", metavar="CIDR", help="repeatable")
    p.add_argument("--password", action=_RefusedPassword, help=argparse.SUPPRESS)
    p.add_argument(
        "--password-file",
        metavar="FILE",
        help="file holding the password (else prompted; never on the command line)",
    )


def _add_money(sub: Any, leaves: _Leaves) -> None:
    credit = sub.add_parser("credit", help="top up or adjust credit")
    c = credit.add_subparsers(dest="credit_command", required=True, metavar="COMMAND")
    p = leaves.add(c, "add", "credit add", "add AMOUNT (negative: an adjustment down)")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("amount", metavar="AMOUNT", help="a decimal string, e.g. 25.00 or -1.5")
    p.add_argument("--reference", required=True, metavar="TEXT")

    p = leaves.add(sub, "ledger", "ledger", "an account's ledger, newest first")
    p.add_argument("account", metavar="ACCOUNT")
    _list_options(p)


def _add_numbers(sub: Any, leaves: _Leaves) -> None:
    numbers = sub.add_parser("numbers", help="sender numbers and their accounts")
    n = numbers.add_subparsers(dest="numbers_command", required=True, metavar="COMMAND")
    p = leaves.add(n, "put", "numbers put", "give a number to an account")
    p.add_argument(
        "number", metavar="NUMBER", help="E.164 (+14155550100), short code or alphanumeric"
    )
    p.add_argument("--account", required=True)
    p.add_argument("--type", required=True, choices=NUMBER_TYPES)
    p.add_argument("--rate", type=float, help="parts per second from this number")

    p = leaves.add(n, "delete", "numbers delete", "take a number away")
    p.add_argument("number", metavar="NUMBER")

    p = leaves.add(n, "list", "numbers list", "the numbers")
    _list_options(p)


def _add_sender_ids(sub: Any, leaves: _Leaves) -> None:
    sender_ids = sub.add_parser("sender-ids", help="registered sender IDs (CONTRACT §6)")
    s = sender_ids.add_subparsers(dest="sender_ids_command", required=True, metavar="COMMAND")
    p = leaves.add(s, "put", "sender-ids put", "register a sender ID for countries")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("sender_id", metavar="SENDER_ID")
    p.add_argument(
        "--country",
        action="extend",
        nargs="+",
        required=True,
        metavar="CC",
        help="ISO 3166 alpha-2",
    )

    p = leaves.add(s, "delete", "sender-ids delete", "unregister a sender ID")
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("sender_id", metavar="SENDER_ID")

    p = leaves.add(s, "list", "sender-ids list", "an account's sender IDs")
    p.add_argument("account", metavar="ACCOUNT")


def _add_opt_outs(sub: Any, leaves: _Leaves) -> None:
    opt_outs = sub.add_parser("opt-outs", help="opt-out lists (CONTRACT §6 Opt-out)")
    o = opt_outs.add_subparsers(dest="opt_outs_command", required=True, metavar="COMMAND")
    p = leaves.add(o, "list", "opt-outs list", "an account's opted-out numbers")
    p.add_argument("account", metavar="ACCOUNT")
    _list_options(p)

    p = leaves.add(
        o,
        "import",
        "opt-outs import",
        f"add a file's numbers (one E.164 a line) to an account's list, "
        f"{IMPORT_CHUNK} lines a request; prints the totals",
    )
    p.add_argument("account", metavar="ACCOUNT")
    p.add_argument("file", metavar="FILE", help="the list, - for standard input")


def _add_templates(sub: Any, leaves: _Leaves) -> None:
    templates = sub.add_parser("templates", help="message templates (CONTRACT §6 Templates)")
    t = templates.add_subparsers(dest="templates_command", required=True, metavar="COMMAND")
    p = leaves.add(t, "list", "templates list", "templates, by id")
    p.add_argument("--status", choices=["pending", "approved", "rejected"])
    p.add_argument("--account", metavar="ACCOUNT")
    _list_options(p)

    p = leaves.add(t, "approve", "templates approve", "approve a pending template")
    p.add_argument("id", metavar="ID")

    p = leaves.add(t, "reject", "templates reject", "reject a pending template, saying why")
    p.add_argument("id", metavar="ID")
    p.add_argument("--reason", required=True, metavar="TEXT")


def add_admin_parser(sub: Any) -> argparse.ArgumentParser:
    """`smsrouter admin ...` under the `smsrouter` command's subparsers."""
    admin: argparse.ArgumentParser = sub.add_parser(
        "admin",
        help="the operator API from the command line (CONTRACT §8)",
        description="A client of the operator API: one HTTP request per command. "
        f"Exit 0 ok, {EXIT_PROBLEM} the API answered a problem, {EXIT_USAGE} usage, "
        f"{EXIT_UNREACHABLE} no answer.",
    )
    _connection_options(admin, on_leaf=False)
    common = argparse.ArgumentParser(add_help=False)
    _connection_options(common, on_leaf=True)
    leaves = _Leaves(common)
    words = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")
    _add_accounts(words, leaves)
    _add_keys(words, leaves)
    _add_smpp(words, leaves)
    _add_money(words, leaves)
    _add_numbers(words, leaves)
    _add_sender_ids(words, leaves)
    _add_opt_outs(words, leaves)
    _add_senders(words, leaves)
    _add_templates(words, leaves)
    p = leaves.add(words, "audit", "audit", "the audit log of changes, newest first")
    _list_options(p)
    admin.set_defaults(func=cmd_admin)
    return admin


def _add_senders(sub: Any, leaves: _Leaves) -> None:
    senders = sub.add_parser("senders", help="flagged and suspended senders (CONTRACT §6)")
    s = senders.add_subparsers(dest="senders_command", required=True, metavar="COMMAND")
    p = leaves.add(s, "list", "senders list", "numbers flagged or suspended by opt-out rate")
    p.add_argument("--state", choices=("flagged", "suspended"))
    _list_options(p)
    p = leaves.add(s, "resume", "senders resume", "lift a number's flag or suspension")
    p.add_argument("number", metavar="NUMBER")
