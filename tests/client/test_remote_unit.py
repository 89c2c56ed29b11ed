"""``HttpBackend`` at the transport level, against real loopback sockets (no mock transport).

A closed port gives a real ``connection refused``; a server that accepts and never answers gives
a real client-side timeout; a canned HTTP answer stands for a proxy, an older server or an error
answer. Inputs that local refuses are refused here before any request: the client points at a
closed port, so a request would have been a ``TransportError`` instead.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

from zsindex import Client
from zsindex.errors import (
    InvalidInputError,
    NotFoundError,
    OverloadedError,
    StoreError,
    TransportError,
    ZsindexError,
)
from zsindex.options import ClassifyOptions, LabelNames, LabelSource
from zsindex.remote import HttpBackend
from zsindex.remote_answers import clean_message
from zsindex.remote_wire import (
    DEFAULT_LIMITS,
    ServerLimits,
    classify_form,
    classify_json,
    import_body,
    labelset_body,
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answer(status: str, body: bytes, ctype: str = "application/json", extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _json_answer(status: str, data: object) -> bytes:
    return _answer(status, json.dumps(data).encode())


class CannedServer:
    """A loopback HTTP/1.1 server: reads each request whole, records it and sends the next of
    ``answers`` (the last one repeats); with no answers it accepts and never answers."""

    def __init__(self, *answers: bytes) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.05)  # accept() wakes up to see close()
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _read_request(self, conn: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b":")
            if key.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(10)
            self._open.append(conn)
            if not self.answers:
                continue  # accepted, never answered
            self.requests.append(self._read_request(conn))
            answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
            conn.sendall(answer)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for conn in self._open:
            conn.close()
        self._thread.join(5)


@pytest.fixture
def canned() -> Iterator[type[CannedServer]]:
    servers: list[CannedServer] = []

    class Started(CannedServer):
        def __init__(self, *answers: bytes) -> None:
            super().__init__(*answers)
            servers.append(self)

    yield Started
    for server in servers:
        server.close()


@pytest.fixture
def offline() -> Iterator[Client]:
    """A client of a closed port: any request it makes is a TransportError."""
    with Client(f"http://127.0.0.1:{_closed_port()}", api_key="k", timeout=5) as client:
        yield client


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


# -- transport failures -------------------------------------------------------------------------


def test_connection_refused_is_a_transport_error(offline: Client) -> None:
    with pytest.raises(
        TransportError, match=r"cannot reach zsindex at http://127\.0\.0\.1"
    ) as info:
        offline.labelsets()
    assert not isinstance(info.value, StoreError)
    assert info.value.code == "transport_error"


def test_a_client_side_timeout_is_a_transport_error(canned: type[CannedServer]) -> None:
    server = canned()  # accepts, never answers
    client = Client(server.url, timeout=0.3)
    with client, pytest.raises(TransportError, match=r"timed out.*within 0\.3 s") as info:
        client.labelsets()
    assert not isinstance(info.value, OverloadedError)


@pytest.mark.parametrize(
    ("answer", "cls", "message"),
    [
        (
            _json_answer("503 Unavailable", {"code": "overloaded", "message": "busy"}),
            OverloadedError,
            "busy",
        ),
        (
            _json_answer("503 Unavailable", {"code": "store_unavailable", "message": "db"}),
            StoreError,
            "db",
        ),
        (
            _answer("502 Bad Gateway", b"<html>nginx</html>", "text/html"),
            TransportError,
            "HTTP 502 from GET /v1/labelsets",
        ),
        (
            _answer("504 Gateway Timeout", b"", "text/plain"),
            TransportError,
            "HTTP 504 from GET /v1/labelsets",
        ),
        (
            _json_answer(
                "422 Unprocessable",
                {"code": "invalid_input", "message": "request: Value error, give one source"},
            ),
            InvalidInputError,
            "give one source",
        ),
        (
            _json_answer(
                "422 Unprocessable",
                {"code": "invalid_input", "message": "Value error, bad; name: Value error, long"},
            ),
            InvalidInputError,
            "bad; name: long",
        ),
    ],
)
def test_error_answers_come_back_as_their_class(
    canned: type[CannedServer], answer: bytes, cls: type[ZsindexError], message: str
) -> None:
    server = canned(answer)
    with Client(server.url) as client, pytest.raises(cls) as info:
        client.labelsets()
    assert type(info.value) is cls and info.value.message == message


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (_answer("200 OK", b"<html>a login page</html>", "text/html"), "not JSON"),
        (_answer("302 Found", b"", "text/plain", "Location: http://elsewhere/\r\n"), "HTTP 302"),
        (_json_answer("200 OK", {"not": "a list"}), "unexpected answer"),
    ],
)
def test_answers_that_are_not_zsindex_are_transport_errors(
    canned: type[CannedServer], answer: bytes, match: str
) -> None:
    server = canned(answer)
    with Client(server.url) as client, pytest.raises(TransportError, match=match):
        client.labelsets()


def test_clean_message_only_strips_pydantic_prefixes() -> None:
    assert clean_message("request: Value error, give one") == "give one"
    assert clean_message("a: Value error, b; request: Value error, c") == "a: b; c"
    assert clean_message("label set 'x' does not exist") == "label set 'x' does not exist"


# -- the key, the given client, the limits ------------------------------------------------------


def test_the_key_goes_on_every_request_and_nowhere_else(canned: type[CannedServer]) -> None:
    server = canned(_json_answer("200 OK", []))
    with Client(server.url, api_key="sekrit-key-123") as client:
        assert client.labelsets() == []
        assert "sekrit" not in repr(client.backend)
    with httpx.Client(base_url=server.url) as http:
        with Client("http://ignored.invalid", api_key="sekrit-key-123", http=http) as client:
            client.labelsets()
        assert not http.is_closed  # the caller's client stays the caller's
    with httpx.Client() as bare:  # no base URL of its own: base_url is used
        Client(server.url, api_key="sekrit-key-123", http=bare).labelsets()
    assert len(server.requests) == 3
    for raw in server.requests:
        head = raw.split(b"\r\n\r\n")[0].lower()
        assert b"authorization: bearer sekrit-key-123" in head
        assert head.startswith(b"get /v1/labelsets ")


def test_http_and_transport_together_or_a_bad_url_are_refused() -> None:
    with httpx.Client() as http, pytest.raises(InvalidInputError, match="not both"):
        HttpBackend("http://x", http=http, transport=httpx.HTTPTransport())
    with pytest.raises(InvalidInputError, match="base_url"):
        HttpBackend("127.0.0.1:8000")


def test_limits_are_asked_once_and_default_on_404(canned: type[CannedServer]) -> None:
    old = canned(_json_answer("404 Not Found", {"code": "not_found", "message": "no route"}))
    backend = HttpBackend(old.url)
    assert backend.server_limits() == DEFAULT_LIMITS == ServerLimits(64, 4096, 32 * 1024 * 1024)
    assert backend.server_limits() is backend.server_limits()
    assert len(old.requests) == 1
    new = canned(
        _json_answer(
            "200 OK",
            {
                "max_images_per_request": 8,
                "max_embeddings_per_request": 100,
                "max_body_bytes": 1000,
            },
        )
    )
    assert HttpBackend(new.url).server_limits() == ServerLimits(8, 100, 1000)
    assert new.requests[0].startswith(b"GET /v1/limits ")


# -- inputs checked before any request ---------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "type_name"),
    [(None, "NoneType"), (0, "int"), (3, "int"), (True, "bool"), ({}, "dict"), (1.5, "float")],
)
def test_bad_images_are_refused_by_index(offline: Client, item: object, type_name: str) -> None:
    images = [_png(), io.BytesIO(_png()), Image.new("RGB", (4, 4)), item]
    expected = f"images[3] must be a path, bytes, a binary file or a PIL image, not {type_name}"
    with pytest.raises(InvalidInputError) as info:
        offline.classify(images, labelset="colors")  # type: ignore[arg-type]
    assert info.value.message == expected


def test_a_text_file_is_not_a_binary_file(offline: Client) -> None:
    with pytest.raises(InvalidInputError, match=r"images\[0\] .* not StringIO"):
        offline.classify([io.StringIO("x")], labelset="colors")  # type: ignore[list-item]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
@pytest.mark.parametrize(
    ("embeddings", "match"),
    [
        (np.array([[1.0, np.nan]], np.float32), "NaN or infinity"),
        (np.array([[1e300, 1.0]]), "NaN or infinity"),  # infinite as float32, as in process
        (np.array([["a", "b"]]), "must be numbers"),
        (np.array([[0.0, 0.0], [1.0, 0.0]]), "all zeros"),
        ([[1.0, 2.0], [3.0]], "rows of one length"),
    ],
)
def test_bad_embeddings_are_refused_before_any_request(
    offline: Client, embeddings: object, match: str
) -> None:
    with pytest.raises(InvalidInputError, match=match):
        offline.classify(embeddings=embeddings, labelset="colors")  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["", "Bad", "a/b", "..", "x" * 65])
def test_impossible_names_are_not_found_on_reads(offline: Client, name: str) -> None:
    expected = f"label set {name!r} does not exist (see `zsindex labels list`)"
    for read in (offline.labelset, offline.history, offline.embeddings, offline.tree):
        with pytest.raises(NotFoundError) as info:
            read(name)
        assert info.value.message == expected
    with pytest.raises(NotFoundError):
        offline.delete_labelset(name)
    with pytest.raises(NotFoundError):
        offline.classify(embeddings=np.ones((1, 4)), labelset=name)


def test_impossible_names_are_invalid_on_writes(offline: Client) -> None:
    with pytest.raises(InvalidInputError, match="invalid label set name"):
        offline.add_labelset("a/b", ["x"])
    with pytest.raises(InvalidInputError, match="invalid label set name"):
        offline.import_labelset("", np.eye(2), ["x", "y"])


def test_bad_import_inputs_are_refused_before_any_request(offline: Client) -> None:
    with pytest.raises(InvalidInputError, match=r"names\[1\] must be a string"):
        offline.import_labelset("imp", np.eye(2), ["x", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"parents\[0\]"):
        offline.import_labelset("imp", np.eye(2), ["x", "y"], parents=[1.5, None])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="2-D"):
        offline.import_labelset("imp", np.ones((2, 2, 2)), ["x", "y"])


# -- the wire format ------------------------------------------------------------------------------


def test_labelset_body_omits_defaults_and_local_only_fields() -> None:
    source = LabelSource(labels=("a", "b"), parents={"b": "a"}, content_name="cli.txt")
    assert labelset_body("t", source, None, None, None, False) == {
        "name": "t",
        "labels": ["a", "b"],
        "parents": {"b": "a"},
    }
    taxonomy = LabelSource(
        content="x", format="taxonomy-csv", node_text="path", allow_duplicates=True
    )
    assert labelset_body("t", taxonomy, ("{} x",), "zsindex-tiny", "tag", True) == {
        "name": "t",
        "content": "x",
        "format": "taxonomy-csv",
        "node_text": "path",
        "allow_duplicates": True,
        "templates": ["{} x"],
        "model": "zsindex-tiny",
        "pretrained": "tag",
        "strict": True,
    }
    cupl = LabelSource(labels={"a": ("p1", "p2")})
    assert labelset_body("t", cupl, "simple-7", None, None, False)["labels"] == {"a": ["p1", "p2"]}


def test_import_body_keeps_fp16_and_the_tree() -> None:
    matrix = np.arange(6, dtype=np.float16).reshape(3, 2)
    names = LabelNames(names=["r", "a", "a"], parents=[None, np.int64(0), "r"])
    body = import_body(matrix.T, names, None, None, "text")
    assert body["dtype"] == "float16" and body["shape"] == [2, 3]
    decoded = np.frombuffer(base64.b64decode(body["data"]), "<f2").reshape(2, 3)
    np.testing.assert_array_equal(decoded, matrix.T)
    assert body["names"] == ["r", "a", "a"] and body["parents"] == [None, 0, "r"]
    assert body["embed_internal"] == "text" and "model" not in body
    as_file = import_body(
        np.eye(2, dtype=np.float64), LabelNames(content="x\ny\n"), "m", None, "mean"
    )
    assert as_file["dtype"] == "float32" and as_file["names_content"] == "x\ny\n"
    assert "embed_internal" not in as_file and "names" not in as_file


def test_classify_bodies() -> None:
    options = ClassifyOptions(k=3, rank=2, fast_decode=False, min_confidence=0.5)
    assert classify_form("s", options, "report") == {
        "labelset": "s",
        "k": "3",
        "rank": "2",
        "min_confidence": "0.5",
        "fast_decode": "false",
        "on_error": "report",
    }
    # Always said: the service reports an unreadable image when a request does not say.
    assert classify_form("s", ClassifyOptions(), "raise") == {"labelset": "s", "on_error": "raise"}
    rows = np.array([[0.25, -1.0]], np.float32)
    assert json.loads(classify_json("s", ClassifyOptions(fast_decode=True), "raise", rows)) == {
        "labelset": "s",
        "fast_decode": True,
        "embeddings": [[0.25, -1.0]],
    }
