"""schemathesis against a real server: every answer is in /openapi.json, and none is a server error.

The server runs with small limits (capacity, inbox count, body size, a short
long poll) so fuzzing reaches 413 and both kinds of 503 within a few dozen
requests. A schema hook steers most generated /inbox requests onto two
inboxes that exist, with their right password, a wrong one or none, so
deliveries (200 with X-From), wrong-password 401s and full inboxes are fuzzed
too, not only the fresh names and broken credentials schemathesis makes up.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, HookContext, Response

from inbox_asgi.http.openapi import OPENAPI
from inbox_asgi.mailbox.errors import InboxFull, TooManyInboxes, WrongPassword

from ..support import ServerProcess, basic, start_server

#: Inboxes created before fuzzing: username → password.
PEERS = {"peer-a": "pw-a", "peer-b": "pw-b"}
VALID = {basic(name, password)["Authorization"]: name for name, password in PEERS.items()}
WRONG = [basic(name, "wrong")["Authorization"] for name in PEERS]

SERVER_FLAGS = (
    *("-long-polling-timeout", "0.05"),
    *("-inbox-capacity", "4"),
    *("-max-inboxes", "6"),
    *("-max-body-size", "64"),
    *("-stun-urls", "stun:127.0.0.1:3478"),
    *("-turn-urls", "turn:127.0.0.1:3478?transport=udp,turns:turn.example:5349"),
    *("-turn-secret", "fuzzing"),
)

CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "enabled": False,
            # 503 is a documented refusal (full inbox, too many inboxes); `only_documented_refusals`
            # lets through only those, so any other 5xx still fails.
            "not_a_server_error": {"enabled": True, "expected-statuses": ["2xx", "3xx", "4xx", "503"]},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "missing_required_header": {"enabled": True},
            "unsupported_method": {"enabled": True},
            # Not `ignored_auth`: any well-formed Basic credentials for a new name create an
            # inbox and succeed. That is the protocol (first use claims a name), not a hole.
        },
        "generation": {"mode": "all"},
    }
)

#: (method, status, detail) of every fuzzed /inbox answer, for the last test.
OUTCOMES: Counter[tuple[str, int, str]] = Counter()

# The document is a Python dict, so the schema loads without a server; a test below
# checks the server serves exactly this dict. (`schemathesis.pytest.from_fixture` would
# load it from the server, but its lazy tests fail under pytest 9: no `Node._nodeid`.)
schema = schemathesis.openapi.from_dict(OPENAPI, config=CONFIG)


def steer(case: Case, authorization: str, recipient: str) -> Case:
    headers = case.headers.copy()
    if authorization == "absent":
        headers.pop("Authorization", None)
    elif authorization != "generated":
        headers["Authorization"] = authorization
    query = dict(case.query)
    if case.method == "POST" and recipient != "generated":
        query["to"] = recipient
    return case.derive(headers=headers, query=query, keep_auth=True)


#: (Authorization, recipient) for successive /inbox requests, in turn: a fixed share of
#: each, whatever hypothesis draws (its choices favour the first option of a list).
STEERING = itertools.cycle(
    itertools.product(["generated", "absent", *WRONG, *VALID, *VALID, *VALID], ["generated", *PEERS])
)


@schema.hook
def map_case(context: HookContext, case: Case) -> Case:
    """Most /inbox GETs and POSTs authenticate as a known peer (right or wrong password)."""
    if case.path != "/inbox" or case.method not in ("GET", "POST"):
        return case
    return steer(case, *next(STEERING))


@schema.hook
def after_call(context: HookContext, case: Case, response: Response) -> None:
    if case.path == "/inbox":
        detail = response.content.decode(errors="replace").strip() if response.status_code >= 400 else ""
        OUTCOMES[case.method, response.status_code, detail] += 1


def only_documented_refusals(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A 503 must be one of the protocol's refusals, with Retry-After; never a crash in disguise."""
    if response.status_code == 503:
        assert response.headers.get("retry-after"), "503 without Retry-After"
        reason = response.content.decode(errors="replace").strip()
        assert reason in (InboxFull.reason, TooManyInboxes.reason), f"unexpected 503: {reason!r}"
    return None


@pytest.fixture(scope="module")
def api_server(
    tls_files: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One real server (HTTPS, verified) for the module, with the PEERS' inboxes created."""
    server = start_server(SERVER_FLAGS, cwd=tmp_path_factory.mktemp("openapi"), tls=tls_files)
    try:
        with server.client() as client:
            for name, password in PEERS.items():
                assert client.get("/inbox", headers=basic(name, password)).status_code == 204
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def session(api_server: ServerProcess) -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def deliver_to_peer_a(server: ServerProcess, session: requests.Session) -> None:
    """Queue a message from peer-b, so a fuzzed GET as peer-a gets a 200 (peer-b's GETs get 204)."""
    session.post(
        f"{server.base_url}/inbox",
        params={"to": "peer-a"},
        headers={**basic("peer-b", PEERS["peer-b"]), "Content-Type": "application/sdp"},
        data=b"v=0",
        verify=server.ca_path,
        timeout=10,
    )  # 503 once the inbox is full: fine, the GET then reads what is queued


@schema.parametrize()
@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_documented_and_none_is_a_server_error(
    case: Case, api_server: ServerProcess, session: requests.Session
) -> None:
    if case.method == "GET" and VALID.get(case.headers.get("Authorization", "")) == "peer-a":
        deliver_to_peer_a(api_server, session)
    case.call_and_validate(
        base_url=api_server.base_url,
        session=session,
        verify=api_server.ca_path,
        timeout=10,
        additional_checks=[only_documented_refusals],
    )


def test_fuzzing_reached_the_interesting_answers() -> None:
    """Guards the hook: without it the fuzzer would mostly see 401s and fresh empty inboxes."""
    if not OUTCOMES:
        pytest.skip("the fuzzing test did not run in this session")
    seen = set(OUTCOMES)
    assert ("GET", 200, "") in seen
    assert ("GET", 204, "") in seen
    assert ("POST", 200, "") in seen
    assert ("GET", 401, WrongPassword.reason) in seen
    assert ("POST", 401, WrongPassword.reason) in seen
    assert ("POST", 503, InboxFull.reason) in seen


def test_served_document_is_the_module_dict(api_server: ServerProcess) -> None:
    with api_server.client() as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == OPENAPI


@pytest.mark.parametrize("path", ["/inbox", "/ice-servers"])
@pytest.mark.parametrize("method", ["HEAD", "PUT", "DELETE", "PATCH", "TRACE"])
def test_other_methods_get_405_allowing_the_documented_ones(
    api_server: ServerProcess, method: str, path: str
) -> None:
    documented = {name.upper() for name in OPENAPI["paths"][path]}
    with api_server.client() as client:
        response = client.request(method, path, headers=basic("peer-a", PEERS["peer-a"]))
    assert response.status_code == 405
    assert {part.strip() for part in response.headers["allow"].split(",")} == documented
