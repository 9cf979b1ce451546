"""What the two OpenAPI 3.1 documents share (CONTRACT §3 and §8): the
problem body of every error, the errors any request may meet, lists with
their cursors, and the few helpers the documents are written with.

The documents are plain dicts (connectors/openapi_public.py for the app
API, connectors/openapi_admin.py for the operator API), encoded once when
their server is built and served as bytes. tests/unit/test_openapi.py holds
them to the servers' route tables and request Structs.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from smsrouter.connectors.problems import PROBLEM_BASE, SERVER_CODES

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"
PROBLEM_JSON = "application/problem+json"

Schema = dict[str, Any]
# Status → the `code`s a response of that status may carry.
Codes = Mapping[int, Iterable[str]]

# Errors the HTTP server answers itself, whatever the route
# (connectors/problems.py server_error): 404 and 405 are the route table's,
# the rest can meet any request. 500 is a handler that failed.
SERVER_ERRORS: dict[int, tuple[str, ...]] = {
    status: (code,) for status, code in SERVER_CODES.items() if status not in (404, 405)
}
SERVER_ERRORS[500] = ("internal",)
# A path segment the route does not know (an id of nothing, a segment with
# "/" in it once decoded) is a 404 too.
NOT_FOUND: dict[int, tuple[str, ...]] = {404: ("not_found",)}
# A read or a change that met a database away or too slow (CONTRACT §11).
STORE_ERRORS: dict[int, tuple[str, ...]] = {503: ("store_unavailable", "store_timeout")}
# A JSON body: malformed (400) or with bad fields (422).
BODY_ERRORS: dict[int, tuple[str, ...]] = {400: ("malformed_json",), 422: ("invalid_request",)}
# A list's parameters: an unknown one, a bad limit or cursor (422).
LIST_ERRORS: dict[int, tuple[str, ...]] = {422: ("invalid_request",)}

_TITLES = {
    400: "Malformed request",
    401: "Missing or unknown credential",
    403: "Forbidden",
    404: "Not found",
    408: "Request not completed in time",
    409: "Conflict with the current state",
    413: "Body too large",
    415: "Unsupported media type or content coding",
    417: "Unsupported expectation",
    422: "Invalid request",
    429: "Too many requests",
    431: "Header section too large",
    500: "Internal error",
    503: "Unavailable",
    505: "HTTP version not supported",
}


def api_version() -> str:
    try:
        return importlib.metadata.version("smsrouter")
    except importlib.metadata.PackageNotFoundError:  # sources run without an install
        return "0"


def encode(document: Mapping[str, Any]) -> bytes:
    return msgspec.json.encode(document)


# ----------------------------------------------------------- schema helpers


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """The schema or JSON null (OpenAPI 3.1: a type list, no `nullable`)."""
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def obj(
    properties: Mapping[str, Schema],
    *,
    required: Iterable[str] | None = None,
    closed: bool = False,
    description: str | None = None,
) -> Schema:
    """An object schema; every property required unless `required` names
    some; `closed` when the server refuses a field it does not know."""
    schema: Schema = {"type": "object", "properties": dict(properties)}
    schema["required"] = list(properties if required is None else required)
    if closed:
        schema["additionalProperties"] = False
    if description is not None:
        schema["description"] = description
    return schema


def string(description: str | None = None, **keywords: Any) -> Schema:
    schema: Schema = {"type": "string", **keywords}
    if description is not None:
        schema["description"] = description
    return schema


def decimal(description: str) -> Schema:
    """Money: a decimal string, never a JSON number (CONTRACT §3)."""
    return string(description, pattern=r"^[+-]?[0-9]+(\.[0-9]+)?$")


DATE_TIME = string(format="date-time")


def page(items_key: str, item: Schema, description: str) -> Schema:
    """A page of a list: its items and the cursor of the next page."""
    return obj(
        {
            items_key: {"type": "array", "items": item},
            "next": ref("Cursor"),
        },
        description=description,
    )


def page_parameters(default: int, most: int) -> list[Schema]:
    """`limit` and `after` (CONTRACT §3, §8 lists)."""
    return [
        query(
            "limit",
            {"type": "integer", "minimum": 1, "maximum": most, "default": default},
            f"Items a page, 1 to {most} (default {default}).",
        ),
        query("after", string(minLength=1), "The `next` cursor of the page before."),
    ]


def query(name: str, schema: Schema, description: str) -> Schema:
    """A query parameter. The servers read an empty value as none given
    (`?status=&limit=`), which `allowEmptyValue` says."""
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": schema,
        "allowEmptyValue": True,
    }


def path_parameter(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema if schema is not None else string(minLength=1),
    }


def json_body(schema: Schema, description: str | None = None) -> Schema:
    body: Schema = {"required": True, "content": {JSON: {"schema": schema}}}
    if description is not None:
        body["description"] = description
    return body


# ----------------------------------------------------------- responses


def json_answer(description: str, schema: Schema, headers: Schema | None = None) -> Schema:
    answer: Schema = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def no_content(description: str) -> Schema:
    return {"description": description}


def merge_codes(*groups: Codes) -> dict[int, list[str]]:
    """The union of several status → codes maps, each code once."""
    merged: dict[int, list[str]] = {}
    for group in groups:
        for status, codes in group.items():
            known = merged.setdefault(status, [])
            known.extend(c for c in codes if c not in known)
    return merged


def problem_answer(status: int, codes: Iterable[str]) -> Schema:
    """A problem response whose `code` is one of `codes`."""
    listed = sorted(codes)
    answer: Schema = {
        "description": _TITLES.get(status, "Error") + ": " + ", ".join(f"`{c}`" for c in listed),
        "content": {
            PROBLEM_JSON: {
                "schema": {
                    "allOf": [
                        ref("Problem"),
                        {"properties": {"code": {"enum": listed}, "status": {"const": status}}},
                    ]
                }
            }
        },
    }
    headers: Schema = {}
    if status in (429, 503):
        headers["Retry-After"] = {"$ref": "#/components/headers/RetryAfter"}
    if status == 401:
        headers["WWW-Authenticate"] = {"$ref": "#/components/headers/WwwAuthenticate"}
    if headers:
        answer["headers"] = headers
    return answer


def responses(success: Mapping[int, Schema], *errors: Codes) -> dict[str, Schema]:
    """An operation's responses: its successes, then a problem for every
    status its errors name, the server's own errors included."""
    shown: dict[str, Schema] = {str(status): answer for status, answer in success.items()}
    for status, codes in sorted(merge_codes(SERVER_ERRORS, *errors).items()):
        if tuple(codes) == SERVER_ERRORS.get(status):
            # The server's own, the same on every route: written once.
            shown[str(status)] = {"$ref": f"#/components/responses/Server{status}"}
        else:
            shown[str(status)] = problem_answer(status, codes)
    return shown


# ----------------------------------------------------------- components


def problem_schemas() -> dict[str, Schema]:
    """The RFC 9457 problem as connectors/problems.py writes it."""
    field_error = obj(
        {
            "field": string("The field (or header, or query parameter) at fault."),
            "code": string("Why, in snake case."),
            "detail": string(),
        },
        description="One bad field of a 422.",
    )
    refusal = obj(
        {
            "to": string("The recipient as the request wrote it."),
            "code": string("The refusal's code, e.g. `opted_out`, `insufficient_credit`."),
            "detail": string(),
        },
        description="A recipient the router refused.",
    )
    problem = obj(
        {
            "type": string(
                f"{PROBLEM_BASE}<kind>, one per kind of problem.",
                format="uri",
            ),
            "title": string(),
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": string(),
            "code": string(
                "The stable reason: clients branch on it, never on text.",
                pattern="^[a-z0-9_]+$",
            ),
            "errors": {
                "type": "array",
                "items": ref("FieldError"),
                "description": "With a 422: each bad field.",
            },
            "rejected": {
                "type": "array",
                "items": ref("Refusal"),
                "description": "With a send none of whose recipients passed: each refusal.",
            },
            "field": string("With a 409: the field whose value conflicts."),
        },
        required=("type", "title", "status", "detail", "code"),
        description="An RFC 9457 problem; other members may extend it.",
    )
    return {
        "Problem": problem,
        "FieldError": field_error,
        "Refusal": refusal,
        "Cursor": nullable(
            string("An opaque position in a list; `null` on its last page.", minLength=1)
        ),
    }


def components(
    schemas: Mapping[str, Schema],
    scheme: str,
    scheme_description: str,
    more_schemes: Mapping[str, Schema] | None = None,
) -> Schema:
    return {
        "schemas": {**problem_schemas(), **schemas},
        "responses": {
            f"Server{status}": problem_answer(status, codes)
            for status, codes in SERVER_ERRORS.items()
        },
        "headers": {
            "RetryAfter": {
                "description": "Seconds to wait before trying again.",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            },
            "WwwAuthenticate": {
                "description": "The challenge: `Bearer` (RFC 6750); on the status page's"
                " routes `Basic` (RFC 7617).",
                "required": True,
                "schema": {"type": "string"},
            },
            "Location": {
                "description": "Where the created resource is read.",
                "required": True,
                "schema": {"type": "string"},
            },
        },
        "securitySchemes": {
            scheme: {"type": "http", "scheme": "bearer", "description": scheme_description},
            **(more_schemes or {}),
        },
    }


def document(
    *,
    title: str,
    description: str,
    paths: Mapping[str, Schema],
    schemas: Mapping[str, Schema],
    scheme: str,
    scheme_description: str,
    more_schemes: Mapping[str, Schema] | None = None,
) -> Schema:
    """The document; its routes need `scheme` (a bearer token) unless
    they say otherwise."""
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": api_version(),
            "description": description,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "security": [{scheme: []}],
        "paths": dict(paths),
        "components": components(schemas, scheme, scheme_description, more_schemes),
    }
