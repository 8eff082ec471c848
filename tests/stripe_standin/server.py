"""An in-memory Stripe stand-in for the test suite (stdlib only).

Stripe has no local server, so the tests run this one on 127.0.0.1 and point the official
``stripe`` SDK at it (``StripeClient(base_addresses={"api": url})``). It speaks the same wire
format as ``api.stripe.com``: form-encoded request bodies (``metadata[k]=v``, ``period[start]``,
``expand[0]``), JSON responses shaped from Stripe's own example objects
(``fixtures/fixtures3.json`` beside this file: the subset of Stripe's official fixtures the
stand-in uses, with Stripe's MIT license and the source commit), Stripe-shaped
errors, ``Authorization: Bearer sk_test_...`` and ``Idempotency-Key`` semantics (the first
successful response is replayed for a repeated key with the same parameters; the same key
with other parameters is refused with 400 ``idempotency_error``).

Supported: customers (create, retrieve, list), invoice items (create, retrieve, list),
invoices (create, retrieve, list, lines, finalize, pay, void), credit notes (create with
``invoice_line_item`` / ``custom_line_item`` lines or ``amount``, retrieve, list).
Failures and slow responses can be injected with :meth:`StripeStandin.fail_next` and
:meth:`StripeStandin.delay_next`.

Module helpers :func:`sign_webhook` and :func:`event` build webhook requests the way Stripe
sends them.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

# Stripe's example objects (stripe/openapi fixtures3.json, the resources used here only);
# fixtures/README.md names the source commit.
FIXTURES_PATH = Path(__file__).resolve().parent / "fixtures" / "fixtures3.json"

# Embedded ``invoice.lines`` holds at most this many lines; the rest via /lines (as Stripe).
EMBEDDED_LINES = 10

Params = dict[str, Any]
Response = tuple[int, dict[str, Any]]


@functools.cache
def _fixtures() -> dict[str, Any]:
    resources: dict[str, Any] = json.loads(FIXTURES_PATH.read_text(encoding="utf-8"))["resources"]
    return resources


def fixture(resource: str) -> dict[str, Any]:
    """A deep copy of Stripe's example object for ``resource`` (e.g. ``"invoice"``)."""
    return copy.deepcopy(_fixtures()[resource])


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


# --------------------------------------------------------------------------- webhooks


def sign_webhook(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header value Stripe would send for ``payload``."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """An Event (shaped from the fixture) of ``type`` carrying ``obj`` as ``data.object``."""
    evt = fixture("event")
    evt.update(
        id=_new_id("evt"),
        type=type,
        created=int(time.time()),
        livemode=False,
        data={"object": copy.deepcopy(obj)},
        pending_webhooks=1,
        request={"id": None, "idempotency_key": None},
    )
    return evt


# --------------------------------------------------------------------------- form parsing


def _key_path(key: str) -> list[str]:
    head, bracket, rest = key.partition("[")
    if not bracket or not rest.endswith("]"):
        return [key]
    return [head, *rest[:-1].split("][")]


def _listify(node: Any, parent_key: str | None = None) -> Any:
    if not isinstance(node, dict):
        return node
    out = {k: _listify(v, k) for k, v in node.items()}
    if out and parent_key != "metadata" and all(k.isdigit() for k in out):
        return [out[k] for k in sorted(out, key=int)]
    return out


def parse_form(pairs: Iterable[tuple[str, str]]) -> Params:
    """Nest Stripe's form encoding: ``a[b][c]=v`` -> ``{"a": {"b": {"c": "v"}}}``, and
    ``a[0]=x`` / ``a[]=x`` -> ``{"a": ["x"]}``. Values stay strings, as Stripe receives them."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        path = _key_path(key)
        node = root
        for i, token in enumerate(path):
            name = str(len(node)) if token == "" else token
            if i == len(path) - 1:
                node[name] = value
            else:
                child = node.get(name)
                if not isinstance(child, dict):
                    child = node[name] = {}
                node = child
    parsed: Params = _listify(root)
    return parsed


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        error: dict[str, Any] = {"type": type, "message": message}
        if code is not None:
            error["code"] = code
        if param is not None:
            error["param"] = param
        self.status = status
        self.body = {"error": error}


def _missing(kind: str, object_id: str, param: str = "id") -> ApiError:
    return ApiError(
        404 if param == "id" else 400,
        f"No such {kind}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def _required(params: Params, name: str) -> Any:
    value = params.get(name)
    if value is None or value == "":
        raise ApiError(
            400, f"Missing required param: {name}.", code="parameter_missing", param=name
        )
    return value


def _int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(
            400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=param
        ) from None


def _bool(value: Any, param: str) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return bool(value == "true")
    raise ApiError(400, f"Invalid boolean: {value}", code="parameter_invalid_boolean", param=param)


def _metadata(params: Params) -> dict[str, str]:
    meta = params.get("metadata")
    if meta in (None, ""):
        return {}
    if not isinstance(meta, dict):
        raise ApiError(400, "Invalid metadata", param="metadata")
    return {k: str(v) for k, v in meta.items() if v != ""}


# --------------------------------------------------------------------------- request log


@dataclass
class LoggedRequest:
    method: str
    path: str
    idempotency_key: str | None
    params: Params
    status: int = 0
    replayed: bool = False
    injected: bool = False


@dataclass
class _Rule:
    remaining: int
    path_prefix: str | None
    method: str | None
    skip: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.remaining > 0
            and (self.path_prefix is None or path.startswith(self.path_prefix))
            and (self.method is None or self.method == method)
        )


@dataclass
class _Failure(_Rule):
    status: int = 500
    after_commit: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Delay(_Rule):
    seconds: float = 0.0


@dataclass
class _IdempotentResult:
    method: str
    path: str
    params: Params
    status: int
    body: dict[str, Any]


_ERROR_SHAPES: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Injected bad request."),
    402: ("card_error", "card_declined", "Your card was declined."),
    404: ("invalid_request_error", "resource_missing", "Injected missing resource."),
    409: (
        "invalid_request_error",
        "lock_timeout",
        "This object cannot be accessed right now "
        "because another API request or Stripe process is currently accessing it.",
    ),
    429: ("invalid_request_error", "rate_limit", "Too many requests hit the API too quickly."),
}


# --------------------------------------------------------------------------- the server


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.standin._serve(self, "GET")

    def do_POST(self) -> None:
        self.server.standin._serve(self, "POST")

    def do_DELETE(self) -> None:
        self.server.standin._serve(self, "DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StripeStandin


Route = tuple[str, re.Pattern[str], Callable[..., Response]]


class StripeStandin:
    """In-memory Stripe. ``start()`` returns the base URL; use as a context manager."""

    def __init__(self) -> None:
        self.customers: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.invoice_items: dict[str, dict[str, Any]] = {}
        self.credit_notes: dict[str, dict[str, Any]] = {}
        self.requests: list[LoggedRequest] = []
        self._idempotency: dict[tuple[str, str], _IdempotentResult] = {}
        self._days_until_due: dict[str, int] = {}
        self._failures: list[_Failure] = []
        self._delays: list[_Delay] = []
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self._routes: list[Route] = [
            ("POST", re.compile(r"/v1/customers"), self._create_customer),
            ("GET", re.compile(r"/v1/customers"), self._list_customers),
            ("GET", re.compile(r"/v1/customers/(?P<id>[^/]+)"), self._get_customer),
            ("POST", re.compile(r"/v1/invoiceitems"), self._create_invoice_item),
            ("GET", re.compile(r"/v1/invoiceitems"), self._list_invoice_items),
            ("GET", re.compile(r"/v1/invoiceitems/(?P<id>[^/]+)"), self._get_invoice_item),
            ("POST", re.compile(r"/v1/invoices"), self._create_invoice),
            ("GET", re.compile(r"/v1/invoices"), self._list_invoices),
            ("GET", re.compile(r"/v1/invoices/(?P<id>[^/]+)"), self._get_invoice),
            ("GET", re.compile(r"/v1/invoices/(?P<id>[^/]+)/lines"), self._list_lines),
            ("POST", re.compile(r"/v1/invoices/(?P<id>[^/]+)/finalize"), self._finalize),
            ("POST", re.compile(r"/v1/invoices/(?P<id>[^/]+)/pay"), self._pay),
            ("POST", re.compile(r"/v1/invoices/(?P<id>[^/]+)/void"), self._void),
            ("POST", re.compile(r"/v1/credit_notes"), self._create_credit_note),
            ("GET", re.compile(r"/v1/credit_notes"), self._list_credit_notes),
            ("GET", re.compile(r"/v1/credit_notes/(?P<id>[^/]+)"), self._get_credit_note),
        ]

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> str:
        if self._server is not None:
            raise RuntimeError("stand-in already started")
        server = _Server(("127.0.0.1", 0), _Handler)
        server.standin = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        host, port = server.server_address[:2]
        self.base_url = f"http://{host!s}:{port}"
        return self.base_url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> StripeStandin:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ----------------------------------------------------------------- test controls

    def fail_next(
        self,
        n: int,
        status: int = 500,
        path_prefix: str | None = None,
        *,
        method: str | None = None,
        skip: int = 0,
        after_commit: bool = False,
        retry_after: int | None = None,
        should_retry: bool | None = None,
    ) -> None:
        """Make the next ``n`` matching requests fail with ``status`` and a Stripe error.

        The first ``skip`` matching requests are let through (to fail halfway through a
        sequence). By default the request fails before Stripe executes it (nothing is created, no
        idempotent result is stored). With ``after_commit=True`` it is executed (and its
        result stored under its idempotency key) and only the response is lost, as when a
        connection drops on the way back. ``retry_after`` / ``should_retry`` add the
        ``Retry-After`` / ``Stripe-Should-Retry`` headers."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if should_retry is not None:
            headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
        with self._lock:
            self._failures.append(
                _Failure(
                    n,
                    path_prefix,
                    method,
                    skip=skip,
                    status=status,
                    after_commit=after_commit,
                    headers=headers,
                )
            )

    def delay_next(
        self, n: int, seconds: float, path_prefix: str | None = None, *, method: str | None = None
    ) -> None:
        """Hold the next ``n`` matching requests for ``seconds`` before executing them."""
        with self._lock:
            self._delays.append(_Delay(n, path_prefix, method, seconds=seconds))

    def expire_idempotency_keys(self) -> None:
        """Forget every stored idempotency key, as Stripe does after 24 hours."""
        with self._lock:
            self._idempotency.clear()

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[LoggedRequest]:
        return [
            r
            for r in list(self.requests)
            if r.path.startswith(path_prefix) and (method is None or r.method == method)
        ]

    def items_of(self, invoice_id: str) -> list[dict[str, Any]]:
        return [ii for ii in self.invoice_items.values() if ii["invoice"] == invoice_id]

    # ----------------------------------------------------------------- HTTP plumbing

    def _serve(self, handler: _Handler, method: str) -> None:
        url = urlsplit(handler.path)
        path = url.path.rstrip("/") or "/"
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode() if length else ""
        params = parse_form(parse_qsl(url.query, keep_blank_values=True))
        params.update(parse_form(parse_qsl(raw, keep_blank_values=True)))
        idem_key = handler.headers.get("Idempotency-Key")
        entry = LoggedRequest(method, path, idem_key, params)
        headers: dict[str, str] = {}
        if idem_key:
            headers["Idempotency-Key"] = idem_key
        if handler.headers.get("Stripe-Version"):
            headers["Stripe-Version"] = handler.headers["Stripe-Version"]

        with self._lock:
            self.requests.append(entry)
        status, body = self._process(handler, method, path, params, idem_key, entry, headers)
        entry.status = status
        self._write(handler, status, body, headers)

    def _process(
        self,
        handler: _Handler,
        method: str,
        path: str,
        params: Params,
        idem_key: str | None,
        entry: LoggedRequest,
        headers: dict[str, str],
    ) -> Response:
        auth = handler.headers.get("Authorization", "")
        api_key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        if not api_key.startswith("sk_test_"):
            shown = api_key[:12] + "*" * max(0, len(api_key) - 12)
            message = (
                f"Invalid API Key provided: {shown}"
                if api_key
                else "You did not provide an API key. Provide it in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
            )
            err = ApiError(401, message)
            return err.status, err.body

        with self._lock:
            delay = self._take(self._delays, method, path)
            failure = self._take(self._failures, method, path)
        if delay is not None:
            time.sleep(delay.seconds)
        if failure is not None and not failure.after_commit:
            entry.injected = True
            headers.update(failure.headers)
            return self._injected_error(failure.status)

        with self._lock:
            status, body = self._execute(api_key, method, path, params, idem_key, entry, headers)
        if failure is not None:
            entry.injected = True
            headers.update(failure.headers)
            return self._injected_error(failure.status)
        return status, body

    @staticmethod
    def _take(rules: list[Any], method: str, path: str) -> Any:
        for rule in rules:
            if rule.matches(method, path):
                if rule.skip > 0:
                    rule.skip -= 1
                    continue
                rule.remaining -= 1
                return rule
        return None

    @staticmethod
    def _injected_error(status: int) -> Response:
        err_type, code, message = _ERROR_SHAPES.get(
            status,
            ("api_error", None, "An unknown error occurred (injected by the stand-in).")
            if status >= 500
            else ("invalid_request_error", None, f"Injected error {status}."),
        )
        err = ApiError(status, message, type=err_type, code=code)
        return err.status, err.body

    def _execute(
        self,
        api_key: str,
        method: str,
        path: str,
        params: Params,
        idem_key: str | None,
        entry: LoggedRequest,
        headers: dict[str, str],
    ) -> Response:
        scope = (api_key, idem_key or "")
        if method == "POST" and idem_key:
            previous = self._idempotency.get(scope)
            if previous is not None:
                if (previous.method, previous.path, previous.params) != (method, path, params):
                    err = ApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        "they were first used with. Try using a key other than "
                        f"'{idem_key}' if you meant to execute a different request.",
                        type="idempotency_error",
                    )
                    return err.status, err.body
                entry.replayed = True
                headers["Idempotent-Replayed"] = "true"
                return previous.status, copy.deepcopy(previous.body)
        try:
            status, body = self._route(method, path, params)
        except ApiError as err:
            return err.status, err.body
        if method == "POST" and idem_key and 200 <= status < 300:
            self._idempotency[scope] = _IdempotentResult(
                method, path, copy.deepcopy(params), status, copy.deepcopy(body)
            )
        return status, body

    def _route(self, method: str, path: str, params: Params) -> Response:
        for route_method, pattern, fn in self._routes:
            match = pattern.fullmatch(path)
            if match and route_method == method:
                return fn(params, **match.groupdict())
        raise ApiError(404, f"Unrecognized request URL ({method}: {path}).")

    @staticmethod
    def _write(
        handler: _Handler, status: int, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        data = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.send_header("Request-Id", _new_id("req"))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout); Stripe would have executed it all the same

    # ----------------------------------------------------------------- helpers

    @staticmethod
    def _list(
        objects: list[dict[str, Any]], url: str, params: Params, *, render: Callable[..., Any]
    ) -> Response:
        limit = _int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise ApiError(400, "Invalid limit: must be between 1 and 100", param="limit")
        ids = [o["id"] for o in objects]
        if params.get("starting_after"):
            cursor = params["starting_after"]
            if cursor not in ids:
                raise _missing("object", cursor, "starting_after")
            page = objects[ids.index(cursor) + 1 :]
            data, has_more = page[:limit], len(page) > limit
        elif params.get("ending_before"):
            cursor = params["ending_before"]
            if cursor not in ids:
                raise _missing("object", cursor, "ending_before")
            page = objects[: ids.index(cursor)]
            data, has_more = page[-limit:], len(page) > limit
        else:
            data, has_more = objects[:limit], len(objects) > limit
        return 200, {
            "object": "list",
            "data": [render(o) for o in data],
            "has_more": has_more,
            "url": url,
        }

    def _customer(self, customer_id: str, param: str = "id") -> dict[str, Any]:
        customer = self.customers.get(customer_id)
        if customer is None:
            raise _missing("customer", customer_id, param)
        return customer

    def _invoice(self, invoice_id: str, param: str = "id") -> dict[str, Any]:
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            raise _missing("invoice", invoice_id, param)
        return invoice

    @staticmethod
    def _render_invoice(invoice: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(invoice)
        lines = out["lines"]["data"]
        out["lines"]["has_more"] = len(lines) > EMBEDDED_LINES
        out["lines"]["data"] = lines[:EMBEDDED_LINES]
        return out

    @staticmethod
    def _recompute(invoice: dict[str, Any]) -> None:
        amount = sum(line["amount"] for line in invoice["lines"]["data"])
        invoice.update(
            subtotal=amount,
            subtotal_excluding_tax=amount,
            total=amount,
            total_excluding_tax=amount,
            amount_due=amount,
            amount_remaining=amount - invoice["amount_paid"],
        )

    # ----------------------------------------------------------------- customers

    def _create_customer(self, params: Params) -> Response:
        now = int(time.time())
        customer = fixture("customer")
        customer.update(
            id=_new_id("cus"),
            created=now,
            livemode=False,
            name=params.get("name"),
            email=params.get("email"),
            description=params.get("description"),
            phone=params.get("phone"),
            metadata=_metadata(params),
            currency=None,
            discount=None,
            balance=0,
            invoice_prefix=secrets.token_hex(4).upper(),
            next_invoice_sequence=1,
        )
        self.customers[customer["id"]] = customer
        return 200, copy.deepcopy(customer)

    def _get_customer(self, params: Params, id: str) -> Response:
        return 200, copy.deepcopy(self._customer(id))

    def _list_customers(self, params: Params) -> Response:
        objects = list(reversed(self.customers.values()))
        if params.get("email"):
            objects = [c for c in objects if c["email"] == params["email"]]
        return self._list(objects, "/v1/customers", params, render=copy.deepcopy)

    # ----------------------------------------------------------------- invoice items

    def _create_invoice_item(self, params: Params) -> Response:
        customer = self._customer(_required(params, "customer"), "customer")
        if params.get("amount") not in (None, ""):
            amount = _int(params["amount"], "amount")
        elif params.get("unit_amount_decimal") not in (None, ""):
            quantity = _int(params.get("quantity", 1), "quantity")
            amount = round(float(params["unit_amount_decimal"]) * quantity)
        else:
            raise ApiError(
                400, "Missing required param: amount.", code="parameter_missing", param="amount"
            )
        invoice = None
        if params.get("invoice"):
            invoice = self._invoice(params["invoice"], "invoice")
            if invoice["status"] != "draft":
                raise ApiError(
                    400,
                    f"Invoice {invoice['id']} is no longer editable (status "
                    f"'{invoice['status']}'); invoice items can only be added to drafts.",
                    code="invoice_not_editable",
                    param="invoice",
                )
            if invoice["customer"] != customer["id"]:
                raise ApiError(400, "The invoice belongs to a different customer.", param="invoice")
        currency = str(
            params.get("currency")
            or (invoice["currency"] if invoice else None)
            or customer["currency"]
            or "usd"
        ).lower()
        if invoice is not None and currency != invoice["currency"]:
            raise ApiError(
                400,
                f"The currency of the invoice item ({currency}) must match the invoice's "
                f"currency ({invoice['currency']}).",
                param="currency",
            )
        now = int(time.time())
        period = params.get("period") or {}
        period_start = _int(period.get("start", now), "period[start]")
        period_end = _int(period.get("end", period_start), "period[end]")
        if period_end < period_start:
            raise ApiError(
                400, "period[end] must be on or after period[start].", param="period[end]"
            )
        item = fixture("invoiceitem")
        item.update(
            id=_new_id("ii"),
            customer=customer["id"],
            amount=amount,
            net_amount=amount,
            currency=currency,
            date=now,
            description=params.get("description"),
            discountable=True,
            discounts=[],
            invoice=invoice["id"] if invoice else None,
            livemode=False,
            metadata=_metadata(params),
            period={"start": period_start, "end": period_end},
            proration=False,
            quantity=1,
            quantity_decimal="1",
            parent=None,
            pricing={
                "type": "price_details",
                "price_details": None,
                "unit_amount_decimal": str(amount),
            },
            tax_rates=[],
            test_clock=None,
        )
        self.invoice_items[item["id"]] = item
        customer["currency"] = customer["currency"] or currency
        if invoice is not None:
            self._attach(invoice, item)
        return 200, copy.deepcopy(item)

    def _attach(self, invoice: dict[str, Any], item: dict[str, Any]) -> None:
        line: dict[str, Any] = (
            fixture("line_item") if "line_item" in _fixtures() else {"object": "line_item"}
        )
        line.update(
            id=_new_id("il"),
            amount=item["amount"],
            currency=item["currency"],
            description=item["description"],
            discount_amounts=[],
            discountable=True,
            discounts=[],
            invoice=invoice["id"],
            livemode=False,
            metadata=dict(item["metadata"]),
            period=dict(item["period"]),
            quantity=1,
            quantity_decimal="1",
            subscription=None,
            subtotal=item["amount"],
            pretax_credit_amounts=[],
            taxes=[],
            parent={
                "type": "invoice_item_details",
                "invoice_item_details": {
                    "invoice_item": item["id"],
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": None,
                },
                "subscription_item_details": None,
            },
            pricing={
                "type": "price_details",
                "price_details": None,
                "unit_amount_decimal": str(item["amount"]),
            },
        )
        invoice["lines"]["data"].append(line)
        self._recompute(invoice)

    def _get_invoice_item(self, params: Params, id: str) -> Response:
        item = self.invoice_items.get(id)
        if item is None:
            raise _missing("invoiceitem", id)
        return 200, copy.deepcopy(item)

    def _list_invoice_items(self, params: Params) -> Response:
        objects = list(reversed(self.invoice_items.values()))
        if params.get("invoice"):
            objects = [ii for ii in objects if ii["invoice"] == params["invoice"]]
        if params.get("customer"):
            objects = [ii for ii in objects if ii["customer"] == params["customer"]]
        if params.get("pending") not in (None, ""):
            pending = _bool(params["pending"], "pending")
            objects = [ii for ii in objects if (ii["invoice"] is None) == pending]
        return self._list(objects, "/v1/invoiceitems", params, render=copy.deepcopy)

    # ----------------------------------------------------------------- invoices

    def _create_invoice(self, params: Params) -> Response:
        customer = self._customer(_required(params, "customer"), "customer")
        collection_method = params.get("collection_method") or "charge_automatically"
        if collection_method not in ("charge_automatically", "send_invoice"):
            raise ApiError(
                400, f"Invalid collection_method: {collection_method}", param="collection_method"
            )
        days_until_due = params.get("days_until_due")
        if (
            collection_method == "send_invoice"
            and days_until_due is None
            and not params.get("due_date")
        ):
            raise ApiError(
                400,
                "Invoices with `collection_method=send_invoice` must have either a `due_date` "
                "or `days_until_due`.",
                param="days_until_due",
            )
        if collection_method == "charge_automatically" and days_until_due is not None:
            raise ApiError(
                400, "days_until_due can only be set with send_invoice.", param="days_until_due"
            )
        behavior = params.get("pending_invoice_items_behavior") or "exclude"
        if behavior not in ("exclude", "include"):
            raise ApiError(
                400,
                f"Invalid pending_invoice_items_behavior: {behavior}",
                param="pending_invoice_items_behavior",
            )
        currency = str(params.get("currency") or customer["currency"] or "usd").lower()
        now = int(time.time())
        invoice = fixture("invoice")
        invoice_id = _new_id("in")
        invoice.update(
            id=invoice_id,
            created=now,
            livemode=False,
            customer=customer["id"],
            customer_name=customer["name"],
            customer_email=customer["email"],
            currency=currency,
            description=params.get("description"),
            metadata=_metadata(params),
            auto_advance=_bool(params.get("auto_advance", "false"), "auto_advance"),
            collection_method=collection_method,
            amount_paid=0,
            amount_overpaid=0,
            amount_shipping=0,
            attempt_count=0,
            attempted=False,
            billing_reason="manual",
            discounts=[],
            due_date=_int(params["due_date"], "due_date") if params.get("due_date") else None,
            effective_at=None,
            ending_balance=None,
            from_invoice=None,
            hosted_invoice_url=None,
            invoice_pdf=None,
            last_finalization_error=None,
            next_payment_attempt=None,
            number=None,
            parent=None,
            period_start=now,
            period_end=now,
            shipping_cost=None,
            status="draft",
            status_transitions={
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            total_discount_amounts=[],
            total_pretax_credit_amounts=[],
            total_taxes=[],
            webhooks_delivered_at=None,
            lines={
                "object": "list",
                "data": [],
                "has_more": False,
                "url": f"/v1/invoices/{invoice_id}/lines",
            },
        )
        if days_until_due is not None:
            self._days_until_due[invoice_id] = _int(days_until_due, "days_until_due")
        self._recompute(invoice)
        self.invoices[invoice_id] = invoice
        customer["currency"] = customer["currency"] or currency
        if behavior == "include":
            for item in self.invoice_items.values():
                if (
                    item["customer"] == customer["id"]
                    and item["invoice"] is None
                    and item["currency"] == currency
                ):
                    item["invoice"] = invoice_id
                    self._attach(invoice, item)
        return 200, self._render_invoice(invoice)

    def _get_invoice(self, params: Params, id: str) -> Response:
        return 200, self._render_invoice(self._invoice(id))

    def _list_invoices(self, params: Params) -> Response:
        objects = list(reversed(self.invoices.values()))
        for name in ("customer", "status", "collection_method"):
            if params.get(name):
                objects = [inv for inv in objects if inv[name] == params[name]]
        return self._list(objects, "/v1/invoices", params, render=self._render_invoice)

    def _list_lines(self, params: Params, id: str) -> Response:
        invoice = self._invoice(id)
        return self._list(
            invoice["lines"]["data"], f"/v1/invoices/{id}/lines", params, render=copy.deepcopy
        )

    def _do_finalize(self, invoice: dict[str, Any]) -> None:
        if invoice["status"] != "draft":
            raise ApiError(
                400,
                "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                code="invoice_not_editable",
            )
        now = int(time.time())
        customer = self.customers[invoice["customer"]]
        sequence = customer["next_invoice_sequence"]
        customer["next_invoice_sequence"] = sequence + 1
        invoice["number"] = f"{customer['invoice_prefix']}-{sequence:04d}"
        invoice["status"] = "open"
        invoice["effective_at"] = now
        invoice["status_transitions"]["finalized_at"] = now
        if invoice["id"] in self._days_until_due:
            invoice["due_date"] = now + 86_400 * self._days_until_due[invoice["id"]]
        invoice["ending_balance"] = 0
        if invoice["amount_due"] == 0:  # Stripe marks $0 invoices paid on finalization
            invoice["status"] = "paid"
            invoice["status_transitions"]["paid_at"] = now

    def _finalize(self, params: Params, id: str) -> Response:
        invoice = self._invoice(id)
        self._do_finalize(invoice)
        if params.get("auto_advance") not in (None, ""):
            invoice["auto_advance"] = _bool(params["auto_advance"], "auto_advance")
        return 200, self._render_invoice(invoice)

    def _pay(self, params: Params, id: str) -> Response:
        invoice = self._invoice(id)
        if invoice["status"] == "draft":
            self._do_finalize(invoice)
        if invoice["status"] != "open":
            raise ApiError(
                400,
                f"Invoice is already {invoice['status']}.",
                code="invoice_not_open" if invoice["status"] != "paid" else None,
            )
        now = int(time.time())
        invoice.update(
            status="paid",
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            attempted=True,
            attempt_count=invoice["attempt_count"] + 1,
        )
        invoice["status_transitions"]["paid_at"] = now
        return 200, self._render_invoice(invoice)

    def _void(self, params: Params, id: str) -> Response:
        invoice = self._invoice(id)
        if invoice["status"] not in ("open", "uncollectible"):
            raise ApiError(
                400,
                f"You can only void an invoice that is open or uncollectible; this one is "
                f"'{invoice['status']}'.",
                code="invoice_not_editable",
            )
        invoice["status"] = "void"
        invoice["status_transitions"]["voided_at"] = int(time.time())
        return 200, self._render_invoice(invoice)

    # ----------------------------------------------------------------- credit notes

    def credit_notes_of(self, invoice_id: str) -> list[dict[str, Any]]:
        return [cn for cn in self.credit_notes.values() if cn["invoice"] == invoice_id]

    def _credit_note_line(self, invoice: dict[str, Any], raw: Any, i: int) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise ApiError(400, "Invalid array", param=f"lines[{i}]")
        line = fixture("credit_note_line_item")
        kind = _required(raw, "type")
        if kind == "invoice_line_item":
            item_id = _required(raw, "invoice_line_item")
            invoice_line = next(
                (il for il in invoice["lines"]["data"] if il["id"] == item_id), None
            )
            if invoice_line is None:
                raise _missing("invoice line item", item_id, f"lines[{i}][invoice_line_item]")
            amount = _int(_required(raw, "amount"), f"lines[{i}][amount]")
            if amount > invoice_line["amount"]:
                raise ApiError(
                    400,
                    f"The credit amount for line {item_id} exceeds the line's amount.",
                    param=f"lines[{i}][amount]",
                )
            line.update(
                invoice_line_item=item_id,
                description=raw.get("description") or invoice_line["description"],
                unit_amount=None,
                unit_amount_decimal=None,
            )
        elif kind == "custom_line_item":
            unit_amount = _int(_required(raw, "unit_amount"), f"lines[{i}][unit_amount]")
            quantity = _int(raw.get("quantity", 1), f"lines[{i}][quantity]")
            amount = unit_amount * quantity
            line.update(
                invoice_line_item=None,
                description=_required(raw, "description"),
                quantity=quantity,
                unit_amount=unit_amount,
                unit_amount_decimal=str(unit_amount),
            )
        else:
            raise ApiError(400, f"Invalid type: {kind}", param=f"lines[{i}][type]")
        if amount <= 0:
            raise ApiError(400, "The credit amount must be positive.", param=f"lines[{i}]")
        line.update(
            id=_new_id("cnli"),
            type=kind,
            amount=amount,
            discount_amount=0,
            discount_amounts=[],
            livemode=False,
            tax_rates=[],
            taxes=[],
            pretax_credit_amounts=[],
            metadata=_metadata(raw),
        )
        return line

    def _create_credit_note(self, params: Params) -> Response:
        invoice = self._invoice(_required(params, "invoice"), "invoice")
        if invoice["status"] not in ("open", "paid"):
            raise ApiError(
                400,
                f"You can only create credit notes on open or paid invoices; this one is "
                f"'{invoice['status']}'.",
                code="invoice_not_editable" if invoice["status"] == "draft" else None,
                param="invoice",
            )
        raw_lines = params.get("lines")
        if raw_lines not in (None, ""):
            if not isinstance(raw_lines, list) or not raw_lines:
                raise ApiError(400, "Invalid array", param="lines")
            lines = [self._credit_note_line(invoice, raw, i) for i, raw in enumerate(raw_lines)]
            amount = sum(line["amount"] for line in lines)
        elif params.get("amount") not in (None, ""):
            amount = _int(params["amount"], "amount")
            lines = []
        else:
            raise ApiError(
                400, "Missing required param: lines or amount.", code="parameter_missing"
            )
        credited = sum(
            cn["amount"] for cn in self.credit_notes_of(invoice["id"]) if cn["status"] == "issued"
        )
        if amount <= 0 or credited + amount > invoice["total"]:
            raise ApiError(
                400,
                f"The sum of credit amount ({amount}) and earlier credit notes ({credited}) "
                f"must be positive and at most the invoice total ({invoice['total']}).",
                param="amount",
            )
        out_of_band = params.get("out_of_band_amount")
        settled = sum(
            _int(params[name], name)
            for name in ("credit_amount", "refund_amount", "out_of_band_amount")
            if params.get(name) not in (None, "")
        )
        if invoice["status"] == "paid" and settled != amount:
            raise ApiError(
                400,
                f"The sum of credit amount, refund amount and out of band amount ({settled}) "
                f"must equal the credit note amount ({amount}).",
            )
        now = int(time.time())
        note = fixture("credit_note")
        note_id = _new_id("cn")
        pre_payment = invoice["status"] == "open"
        note.update(
            id=note_id,
            amount=amount,
            amount_shipping=0,
            created=now,
            effective_at=now,
            currency=invoice["currency"],
            customer=invoice["customer"],
            customer_balance_transaction=None,
            discount_amount=0,
            discount_amounts=[],
            invoice=invoice["id"],
            livemode=False,
            memo=params.get("memo"),
            metadata=_metadata(params),
            number=f"{invoice['number']}-CN-{len(self.credit_notes_of(invoice['id'])) + 1:02d}",
            out_of_band_amount=None if out_of_band in (None, "") else _int(out_of_band, "x"),
            pdf=None,
            reason=params.get("reason"),
            shipping_cost=None,
            status="issued",
            subtotal=amount,
            subtotal_excluding_tax=amount,
            total=amount,
            total_excluding_tax=amount,
            type="pre_payment" if pre_payment else "post_payment",
            voided_at=None,
            pretax_credit_amounts=[],
            total_taxes=[],
            refunds=[],
            pre_payment_amount=amount if pre_payment else 0,
            post_payment_amount=0 if pre_payment else amount,
            lines={
                "object": "list",
                "data": lines,
                "has_more": False,
                "url": f"/v1/credit_notes/{note_id}/lines",
            },
        )
        self.credit_notes[note_id] = note
        if pre_payment:
            invoice["pre_payment_credit_notes_amount"] = (
                invoice.get("pre_payment_credit_notes_amount") or 0
            ) + amount
            invoice["amount_due"] -= amount
            invoice["amount_remaining"] -= amount
        else:
            invoice["post_payment_credit_notes_amount"] = (
                invoice.get("post_payment_credit_notes_amount") or 0
            ) + amount
        return 200, copy.deepcopy(note)

    def _get_credit_note(self, params: Params, id: str) -> Response:
        note = self.credit_notes.get(id)
        if note is None:
            raise _missing("credit_note", id)
        return 200, copy.deepcopy(note)

    def _list_credit_notes(self, params: Params) -> Response:
        objects = list(reversed(self.credit_notes.values()))
        for name in ("invoice", "customer"):
            if params.get(name):
                objects = [cn for cn in objects if cn[name] == params[name]]
        return self._list(objects, "/v1/credit_notes", params, render=copy.deepcopy)
