"""The wire protocol (SPEC.md section 2) as an OpenAPI 3 document, served at /openapi.json.

The document is a plain dict so tests can read it directly; the endpoint
serves bytes encoded once. tests/test_openapi.py runs schemathesis against a
real server with it, so a status code, header or content type the server
answers but this document does not list fails the suite.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from inbox_asgi import __version__

JSON = dict[str, Any]

TEXT_PLAIN: JSON = {"text/plain": {"schema": {"type": "string"}}}
BINARY: JSON = {"schema": {"type": "string", "format": "binary"}}
ICE_SERVERS_SCHEMA: JSON = {"$ref": "#/components/schemas/IceServers"}


def _error(description: str, *headers: str) -> JSON:
    """An error response: a short plain-text reason, plus the named header components."""
    response: JSON = {"description": description, "content": TEXT_PLAIN}
    if headers:
        response["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in headers}
    return response


def _ref(name: str) -> JSON:
    return {"$ref": f"#/components/responses/{name}"}


def _cors_preflight(operation_id: str, summary: str, bad_request: str) -> JSON:
    """OPTIONS on an endpoint: CORS preflights, answered without touching an inbox."""
    return {
        "operationId": operation_id,
        "summary": summary,
        "security": [],
        "responses": {
            "200": {
                "description": "A CORS preflight answered by the CORS middleware (-cors on).",
                "content": TEXT_PLAIN,
            },
            "204": {"description": "No content (plus CORS headers when -cors is on)."},
            "400": _error(bad_request),
            **COMMON_ERRORS,
        },
    }


#: Answers any /inbox method can get before the endpoint runs.
COMMON_ERRORS: JSON = {
    "429": _ref("RateLimited"),
    "431": _ref("HeadersTooLarge"),
}

OPENAPI: JSON = {
    "openapi": "3.0.3",
    "info": {
        "title": "inbox-asgi",
        "version": __version__,
        "description": (
            "WebRTC signaling through short-lived, password-protected inboxes. Every peer reads its "
            "own inbox with GET /inbox (long polling) and posts messages to other peers' inboxes "
            "with POST /inbox?to=PEER. The first request that authenticates as a username creates "
            "that inbox with the request's password; afterwards only that password opens it. "
            "Methods other than GET, POST and OPTIONS on /inbox get 405 with "
            "`Allow: GET, POST, OPTIONS`, decided before authentication."
        ),
        "license": {"name": "MIT"},
    },
    "servers": [{"url": "/"}],
    "paths": {
        "/inbox": {
            "get": {
                "operationId": "receiveMessage",
                "summary": "Read the oldest message of the caller's inbox",
                "description": (
                    "Creates the caller's inbox if it does not exist. With a message waiting: 200 and "
                    "the message, which leaves the inbox. Without one, the request waits (long polling) "
                    "until a message arrives, the long-poll timeout passes, the client goes away or a "
                    "newer GET for the same inbox arrives; then 204. Only one reader waits per inbox: "
                    "the newer GET wins and the older one gets 204 at once."
                ),
                "security": [{"basic": []}],
                "responses": {
                    "200": {
                        "description": (
                            "The oldest message, body exactly as posted. Content-Type is the sender's; "
                            "absent when the sender gave none."
                        ),
                        "headers": {
                            "X-From": {"$ref": "#/components/headers/X-From"},
                            "Cache-Control": {"$ref": "#/components/headers/Cache-Control"},
                        },
                        "content": {"*/*": BINARY},
                    },
                    "204": {
                        "description": "No message: long polling is off, or the wait ended without one.",
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/Cache-Control"}},
                    },
                    "400": _ref("MalformedQuery"),
                    "401": _ref("Unauthorized"),
                    "503": _ref("Unavailable"),
                    **COMMON_ERRORS,
                },
            },
            "post": {
                "operationId": "sendMessage",
                "summary": "Send a message to another peer's inbox",
                "description": (
                    "Checked in this order, the first failure answers: malformed query (400); the "
                    "caller's credentials, which create the caller's inbox if it does not exist (401); "
                    "`to` missing or empty (400); body over max-body-size (413); recipient's inbox "
                    "missing (404); recipient's inbox full (503 with Retry-After). Otherwise 200: the "
                    "message is delivered with X-From set to the caller. Empty bodies are valid."
                ),
                "security": [{"basic": []}],
                "parameters": [
                    {
                        "name": "to",
                        "in": "query",
                        "required": True,
                        "description": "The recipient's username.",
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "requestBody": {
                    "required": False,
                    "description": (
                        "The message, at most max-body-size bytes (default 10240). Any media type: "
                        "the reader gets it back as its Content-Type."
                    ),
                    "content": {
                        "application/json": {"schema": {}},
                        "application/octet-stream": BINARY,
                        "text/plain": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": {"description": "Accepted: queued, or handed straight to the waiting reader."},
                    "400": _ref("BadRequest"),
                    "401": _ref("Unauthorized"),
                    "404": _error("The recipient's inbox does not exist (never created, or expired)."),
                    "413": _error(
                        "The body and its Content-Type together are larger than max-body-size. Decided "
                        "from Content-Length when given, before the body is read, and the connection is "
                        "then closed rather than drained."
                    ),
                    "503": _ref("Unavailable"),
                    **COMMON_ERRORS,
                },
            },
            "options": _cors_preflight(
                "inboxOptions",
                "CORS preflight; never touches an inbox",
                "A CORS preflight from an origin that is not allowed, or a request the HTTP parser "
                "cannot read.",
            ),
        },
        "/ice-servers": {
            "get": {
                "operationId": "iceServers",
                "summary": "STUN and TURN servers for RTCPeerConnection, with fresh TURN credentials",
                "description": (
                    "Authenticated like a POST's sender (creates the caller's inbox if it does not exist). "
                    "TURN credentials follow the TURN REST API (coturn's --use-auth-secret): username "
                    "`EXPIRY:USER`, credential the base64 HMAC-SHA1 of it under the TURN secret. Entries "
                    "without URLs are left out; with nothing configured the list is empty and ttl 0."
                ),
                "security": [{"basic": []}],
                "responses": {
                    "200": {
                        "description": "The `iceServers` list for RTCPeerConnection, and its lifetime.",
                        "headers": {"Cache-Control": {"$ref": "#/components/headers/Cache-Control"}},
                        "content": {"application/json": {"schema": ICE_SERVERS_SCHEMA}},
                    },
                    "400": _ref("BadRequest"),
                    "401": _ref("Unauthorized"),
                    "503": _ref("Unavailable"),
                    **COMMON_ERRORS,
                },
            },
            "options": _cors_preflight(
                "iceServersOptions", "CORS preflight", "A CORS preflight from an origin that is not allowed."
            ),
        },
        "/healthz": {
            "get": {
                "operationId": "health",
                "summary": "Liveness probe",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The server is up.",
                        "content": {"text/plain": {"schema": {"type": "string", "enum": ["ok\n"]}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document",
                "security": [],
                "responses": {
                    "200": {
                        "description": "The OpenAPI description of this server.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    },
    "components": {
        "schemas": {
            "IceServers": {
                "type": "object",
                "required": ["iceServers", "ttl"],
                "properties": {
                    "iceServers": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["urls"],
                            "properties": {
                                "urls": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                                "username": {"type": "string"},
                                "credential": {"type": "string"},
                            },
                        },
                    },
                    "ttl": {"type": "integer", "minimum": 0, "description": "Seconds the credentials last."},
                },
            }
        },
        "securitySchemes": {
            "basic": {
                "type": "http",
                "scheme": "basic",
                "description": (
                    "The username (everything before the first ':') names the inbox: a non-empty UTF-8 "
                    "string without control characters. The password may be empty or contain ':'. The "
                    "first request for a username sets the inbox's password. With -auth-secret the "
                    "password is an access token `EXPIRY:SIG` minted by the operator's backend."
                ),
            }
        },
        "headers": {
            "X-From": {
                "description": "The sender's username (its UTF-8 bytes, unescaped).",
                "required": True,
                "schema": {"type": "string", "minLength": 1},
            },
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "required": True,
                "schema": {"type": "integer", "minimum": 0},
            },
            "WWW-Authenticate": {
                "description": "The Basic challenge.",
                "required": True,
                "schema": {"type": "string", "pattern": "^Basic"},
            },
            "Cache-Control": {
                "description": "Inbox reads are never cached.",
                "required": True,
                "schema": {"type": "string", "enum": ["no-store"]},
            },
        },
        "responses": {
            "MalformedQuery": _error(
                "Malformed query string: a '%' not followed by two hex digits, or a decoded value that "
                "is not UTF-8; two Authorization headers (or a request the HTTP parser cannot read)."
            ),
            "BadRequest": _error(
                "Malformed query string, two Authorization headers, or `to` missing or empty."
            ),
            "Unauthorized": _error(
                "Credentials missing, not Basic, not base64, not UTF-8, with an empty username or a "
                "control character in it; the wrong password for an existing inbox; or, with access "
                "tokens on, a token that is malformed, forged, for another user or expired.",
                "WWW-Authenticate",
            ),
            "RateLimited": _error(
                "Too many requests from this client (rate limit on), or this request would create an "
                "inbox beyond max-inboxes-per-ip for the client's address.",
                "Retry-After",
            ),
            "HeadersTooLarge": _error("The request head is larger than max-header-size."),
            "Unavailable": _error(
                "Retry later: the recipient's inbox holds inbox-capacity messages, all queued messages "
                "hold max-queued-bytes, the server holds max-inboxes inboxes and this would create one "
                "more, or the message store is unreachable.",
                "Retry-After",
            ),
        },
    },
}

_BODY = json.dumps(OPENAPI, separators=(",", ":")).encode()


async def openapi_endpoint(request: Request) -> Response:
    return Response(_BODY, media_type="application/json")
