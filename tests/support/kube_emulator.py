"""An in-memory Kubernetes API for the operator tests: kmock's emulator, served over HTTP from a
background thread, with the fixes kopf and the sync kubernetes client need (see PatchedEmulator).

kmock stands in for a real API server, which cannot run here; it has no Job controller, no
garbage collection and no label-selector filtering, so the tests play those parts (job_runner.py).
"""

import asyncio
import collections
import contextvars
import dataclasses
import datetime
import itertools
import logging
import os
import re
import time
import uuid
import tempfile
import threading
import types

import aiohttp.web
import jsonpatch
import kmock
import yaml

CRD_KEY = "pnaseval.io/v1alpha1/pnasevals"


_CURRENT_RV: contextvars.ContextVar[int | None] = contextvars.ContextVar("_CURRENT_RV", default=None)


class _RecordingBus(kmock.Bus):
    """A per-resource event bus that also keeps a log of (resourceVersion, event)."""

    def __init__(self, owner: "PatchedEmulator"):
        super().__init__()
        self.owner = owner
        self.log: list[tuple[int, dict]] = []

    async def put(self, *items):
        # Called by kmock under the emulator lock, in the task of the mutating request.
        stamped = []
        for item in items:
            rv = _CURRENT_RV.get()
            if rv is None:
                rv = next(self.owner._rv_counter)
            if item.get("type") == "DELETED":  # k8s bumps the rv on deletion too
                obj = dict(item["object"])
                obj["metadata"] = dict(obj.get("metadata", {}), resourceVersion=str(rv))
                item = {"type": "DELETED", "object": obj}
            self.log.append((rv, item))
            self.owner._rv_committed = max(self.owner._rv_committed, rv)
            stamped.append(item)
        await super().put(*stamped)


@dataclasses.dataclass
class Fault:
    """An API server's bad day, for requests whose method and path (with the query) match.

    It answers as kube-apiserver answers a failed request: the HTTP code and a `Status` object
    (kind Status, status Failure, message, reason, code: k8s.io/apimachinery/pkg/apis/meta/v1
    types.go, StatusReason), before anything is stored, so a refused write changes nothing. An etcd
    outage ("etcdserver: mvcc: database space exceeded") reaches clients as 500 with that message;
    a ResourceQuota refusal as 403 Forbidden. `hang` seconds: the request gets no answer for that
    long (a client without a timeout waits it out). Active for `times` requests, or for `seconds`
    from its first match (then the server recovers), or until `active` is cleared.
    """

    method: str
    path: str  # regular expression, searched in the path and query
    status: int = 500
    message: str = "etcdserver: mvcc: database space exceeded"
    times: int | None = None
    seconds: float | None = None
    hang: float = 0.0
    active: bool = True
    hits: int = 0
    first: float | None = None

    REASONS = {
        403: "Forbidden",
        409: "AlreadyExists",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
    }

    def take(self, method: str, path: str) -> bool:
        if not self.active or method != self.method or not re.search(self.path, path):
            return False
        now = time.monotonic()
        self.first = self.first or now
        if (self.times is not None and self.hits >= self.times) or (
            self.seconds is not None and now - self.first > self.seconds
        ):
            self.active = False
            return False
        self.hits += 1
        return True

    def response(self) -> aiohttp.web.Response:
        return failure(self.status, self.REASONS.get(self.status, "InternalError"), self.message)


def failure(code: int, reason: str, message: str) -> aiohttp.web.Response:
    """A failed request as kube-apiserver answers it: the HTTP code and a metav1 Status object."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return aiohttp.web.json_response(body, status=code)


class PatchedEmulator(kmock.KubernetesEmulator):
    """kmock 0.8 KubernetesEmulator + fixes needed by kopf and the sync kubernetes client.

    1. resourceVersion: kmock never sets/bumps it (nor uid/creationTimestamp).
       Here: every create/patch/delete gets a fresh global rv; create fills uid
       and creationTimestamp if absent; lists report the current rv.
    2. Watch: kmock ignores ?resourceVersion= and always replays every existing
       object as ADDED, so kopf (list -> patch -> watch) receives a STALE body after
       its own patch and re-runs handlers (e.g. @kopf.on.create twice -> 409), or
       (with rv bumping) stalls forever.  Here: watch with a numeric rv replays
       only the logged events newer than that rv; without rv, replays ADDED snapshot.
       Also subscribes to the bus atomically with the snapshot (kmock has a gap).
       ?timeoutSeconds= is honoured (kmock ignores it and streams forever), with one deadline for the
       whole stream: a wait_for per event made streams fall seconds behind under load.
    3. Failed JSON-patch `test` op -> 422 (kmock: 500); kopf relies on 422.
    4. The sync kubernetes client sends ?watch=True (capital T); kmock only knows
       watch=true and serves a plain LIST.  Normalised here.
    5. CREATE answers 201 (kmock: 200); CustomObjectsApi.create_* returns None on 200. A created
       object gets metadata.namespace from the URL when its body has none, as the API server does.
    6. LIST responses carry apiVersion/kind (kubectl refuses lists without 'kind').
    7. Lists and watches honour labelSelector (=, ==, !=, key, !key: the equality-based selectors of
       kubernetes.io/docs/concepts/overview/working-with-objects/labels/) and fieldSelector (equality
       on dotted paths, e.g. involvedObject.name=x for Events), as the API server does.
    8. kmock's request history is trimmed (see __call__): its cost per request grew with every request.
    9. Faults (see Fault) are answered before anything else, and every request is logged with its
       client's User-Agent (`log`: (time, method, path, user agent)) so that a test or a benchmark
       can count what one client asked.
    10. Namespace objects: kmock's path parser takes /api/v1/namespaces/<name> for the prefix of
       namespaced objects, so it cannot serve them. They are served here (`namespaces`), as
       kube-apiserver serves that cluster-scoped kind: get, list, create (201; 409 AlreadyExists),
       merge patch, delete; a missing one is a 404 NotFound Status.
    """

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self._rv_counter = itertools.count(1000)
        self._rv_committed = 999
        self._buses = collections.defaultdict(lambda: _RecordingBus(self))
        self.faults: list[Fault] = []
        self.log: list[tuple[float, str, str, str]] = []
        self.created: dict[tuple[str, str, str], float] = {}  # (plural, namespace, name) -> when (monotonic)
        self.namespaces: dict[str, dict] = {}

    def inject(self, method: str, path: str, **kwargs) -> Fault:
        fault = Fault(method, path, **kwargs)
        self.faults.append(fault)
        return fault

    async def __call__(self, raw_request):
        # kmock keeps every request and matches each new one by walking that history, so a request
        # costs time in proportion to all served before it (200 ms after ~1,500): keep the recent ones
        # (far more than are ever in flight), which is all the matching needs
        if len(self._requests) > 150:
            del self._requests[:-100]
        path = raw_request.path_qs
        self.log.append((time.monotonic(), raw_request.method, path, raw_request.headers.get("User-Agent", "")))
        fault = next((f for f in list(self.faults) if f.take(raw_request.method, path)), None)
        if fault is not None:
            await raw_request.read()
            if fault.hang:
                await asyncio.sleep(fault.hang)
            return fault.response()
        namespace_path = re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?/?", raw_request.path)
        if namespace_path and raw_request.query.get("watch") not in ("true", "True", "1"):
            return await self._namespace(raw_request, namespace_path.group(1))
        if raw_request.query.get("watch") in ("True", "1"):
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        response = await super().__call__(raw_request)
        if raw_request.method == "POST" and response.status == 200 and not response.prepared:
            response.set_status(201)
        return response

    async def _namespace(self, raw_request, name: str | None) -> aiohttp.web.Response:
        """Namespace objects (see 10 above)."""
        method = raw_request.method
        if name is None and method == "GET":
            items = [
                ns
                for ns in self.namespaces.values()
                if selected(types.SimpleNamespace(params=dict(raw_request.query)), ns)
            ]
            return aiohttp.web.json_response(
                {
                    "apiVersion": "v1",
                    "kind": "NamespaceList",
                    "metadata": {"resourceVersion": str(self._rv_committed)},
                    "items": items,
                }
            )
        if name is None and method == "POST":
            body = await raw_request.json()
            name = body["metadata"]["name"]
            if name in self.namespaces:
                return failure(409, "AlreadyExists", f'namespaces "{name}" already exists')
            body["metadata"].update(
                uid=str(uuid.uuid4()),
                resourceVersion=str(next(self._rv_counter)),
                creationTimestamp=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
            body.update(apiVersion="v1", kind="Namespace", status={"phase": "Active"})
            self.namespaces[name] = body
            return aiohttp.web.json_response(body, status=201)
        if name not in self.namespaces:
            return failure(404, "NotFound", f'namespaces "{name}" not found')
        if method == "PATCH":
            patch = await raw_request.json()
            self.namespaces[name] = (
                jsonpatch.apply_patch(self.namespaces[name], patch)
                if isinstance(patch, list)
                else _merge(self.namespaces[name], patch)
            )
        elif method == "DELETE":
            return aiohttp.web.json_response(self.namespaces.pop(name))
        return aiohttp.web.json_response(self.namespaces[name])

    async def _handle(self, request):
        # NB: no awaits between the rv assignment and kmock's lock acquisition => rv order == lock order.
        token = None
        if request.resource is not None and request.action in (
            kmock.action.CREATE,
            kmock.action.UPDATE,
            kmock.action.DELETE,
        ):
            rv = next(self._rv_counter)
            token = _CURRENT_RV.set(rv)
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault("metadata", {})
                if request.namespace and not meta.get("namespace"):  # the API server fills it from the URL
                    meta["namespace"] = request.namespace
                meta.setdefault("uid", str(uuid.uuid4()))
                if not meta.get("name") and meta.get("generateName"):  # kopf names its Events this way
                    meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
                meta.setdefault(
                    "creationTimestamp", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                )
                meta["resourceVersion"] = str(rv)
                self.created[(request.resource.plural, meta.get("namespace", ""), meta.get("name", ""))] = (
                    time.monotonic()
                )
            elif request.action == kmock.action.UPDATE and isinstance(request.data, dict):
                if request.data.get("metadata") is None:
                    request.data["metadata"] = {}
                request.data["metadata"]["resourceVersion"] = str(rv)
            elif request.action == kmock.action.UPDATE and isinstance(request.data, list):
                request.data.append({"op": "replace", "path": "/metadata/resourceVersion", "value": str(rv)})
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchException as e:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e))
        finally:
            if token is not None:  # aiohttp reuses one task per keep-alive connection
                _CURRENT_RV.reset(token)

    def _matches(self, request, event) -> bool:
        meta = event.get("object", {}).get("metadata", {})
        return self._KubernetesEmulator__check(
            request, request.resource, meta.get("namespace"), meta.get("name"), strict=False
        ) and selected(request, event.get("object", {}))

    async def _serve_list(self, request):
        if not any(res == request.resource for res in self._get_resources()):
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            objs = self._KubernetesEmulator__get_objs(request, strict=False)
            items = [obj.raw for obj in objs if not obj.deleted and selected(request, obj.raw)]
            rv = self._rv_committed
        res = request.resource
        info = self.resources[res] if res in self.resources else None
        kind = (info.kind if info is not None and info.kind else res.plural.capitalize()) + "List"
        api_version = f"{res.group}/{res.version}" if res.group else res.version
        return {
            "apiVersion": api_version,
            "kind": kind,  # kubectl needs these
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    async def _serve_watch(self, request):
        yield b""  # send the headers now
        since = request.params.get("resourceVersion")
        timeout = request.params.get("timeoutSeconds")
        deadline = None if not timeout else asyncio.get_running_loop().time() + float(timeout)
        bus = self._buses[request.resource]
        async with self._lock:  # mark + snapshot atomically (kmock publishes under this lock)
            marker = await bus.mark()
            if since and since.isdigit() and int(since) > 0:
                replay = [ev for rv, ev in bus.log if rv > int(since) and self._matches(request, ev)]
            else:
                objs = self._KubernetesEmulator__get_objs(request, strict=False)
                replay = [{"type": "ADDED", "object": obj.raw} for obj in objs if not obj.deleted]
        try:
            for event in replay:
                yield event
            # one deadline for the whole stream (not a timer per event: those pile up under load)
            async with asyncio.timeout_at(deadline):
                async for event in bus.stream(since=marker):
                    if self._matches(request, event):
                        yield event
        except TimeoutError:
            return
        finally:
            await bus.unmark(marker)


def _merge(target: dict, patch: dict) -> dict:
    """RFC 7386 JSON merge patch."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _terms(text: str | None) -> list[tuple[str, str, str | None]]:
    """ "a=b,c!=d,e,!f" -> [(a, '=', b), (c, '!=', d), (e, 'exists', None), (f, '!exists', None)]."""
    out = []
    for term in filter(None, (t.strip() for t in (text or "").split(","))):
        for op in ("!=", "==", "="):
            if op in term:
                key, _, value = term.partition(op)
                out.append((key.strip(), "!=" if op == "!=" else "=", value.strip()))
                break
        else:
            out.append((term[1:], "!exists", None) if term.startswith("!") else (term, "exists", None))
    return out


def _field(obj: dict, path: str):
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def selected(request, obj: dict) -> bool:
    """Whether an object passes the request's labelSelector and fieldSelector."""
    params = getattr(request, "params", None) or {}
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for key, op, value in _terms(params.get("labelSelector")):
        if (op == "exists" and key not in labels) or (op == "!exists" and key in labels):
            return False
        if (op == "=" and labels.get(key) != value) or (op == "!=" and labels.get(key) == value):
            return False
    for key, op, value in _terms(params.get("fieldSelector")):
        found = _field(obj, key)
        if (op == "=" and str(found) != value) or (op == "!=" and str(found) == value):
            return False
    return True


def register_crd(k: kmock.KubernetesEmulator) -> None:
    k.resources.load_bundled()  # builtins: v1/pods, batch/v1/jobs, v1/events, v1/secrets, ...
    k.resources[CRD_KEY] = kmock.ResourceInfo(
        kind="PnasEval",
        singular="pnaseval",
        namespaced=True,
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        subresources={"status"},
    )


# aiohttp logs every request at INFO; one logged after a test's log capture has closed prints a
# "Logging error" traceback into the next test's output. The emulator keeps its own request log.
logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class KmockThread:
    def __init__(self, port: int | None = None, patched: bool = True):
        self.emulator_cls = PatchedEmulator if patched else kmock.KubernetesEmulator
        self._want_port = port
        self.loop: asyncio.AbstractEventLoop | None = None
        self.emulator: kmock.KubernetesEmulator | None = None
        self.server: kmock.Server | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.kubeconfig_path: str | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self, timeout: float = 10) -> "KmockThread":
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("kmock did not start")
        if self._error:
            raise self._error
        self.kubeconfig_path = self.write_kubeconfig()
        return self

    def stop(self, timeout: float = 10) -> None:
        if self.loop and self._stop:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(timeout)
        if self.kubeconfig_path and os.path.exists(self.kubeconfig_path):
            os.unlink(self.kubeconfig_path)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surface startup errors to the caller
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with self.emulator_cls() as k, kmock.Server(k, port=self._want_port) as srv:
            register_crd(k)
            self.emulator, self.server = k, srv
            self._ready.set()
            await self._stop.wait()

    # -- helpers -----------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro_or_fn, timeout: float = 10):
        """Run something on the emulator's loop (the emulator is not thread-safe)."""
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self.loop).result(timeout)

        async def wrap():
            return coro_or_fn()

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def write_kubeconfig(self) -> str:
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kmock", "cluster": {"server": self.url}}],
            "users": [{"name": "kmock", "user": {"token": "dummy"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": "default"}}],
            "current-context": "kmock",
        }
        fd, path = tempfile.mkstemp(prefix="kmock-kubeconfig-", suffix=".yaml")
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(cfg, f)
        return path
