"""An in-memory Kubernetes API for the operator tests: kmock's emulator, served over HTTP from a
background thread, with the fixes kopf and the sync kubernetes client need (see PatchedEmulator).

kmock stands in for a real API server, which cannot run here; it has no Job controller, no
garbage collection and no label-selector filtering, so the tests play those parts (job_runner.py).
"""
import asyncio
import collections
import contextvars
import datetime
import itertools
import os
import uuid
import tempfile
import threading

import jsonpatch
import kmock
import yaml

CRD_KEY = 'pnaseval.io/v1alpha1/pnasevals'


_CURRENT_RV: contextvars.ContextVar[int | None] = contextvars.ContextVar('_CURRENT_RV', default=None)


class _RecordingBus(kmock.Bus):
    """A per-resource event bus that also keeps a log of (resourceVersion, event)."""

    def __init__(self, owner: 'PatchedEmulator'):
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
            if item.get('type') == 'DELETED':   # k8s bumps the rv on deletion too
                obj = dict(item['object'])
                obj['metadata'] = dict(obj.get('metadata', {}), resourceVersion=str(rv))
                item = {'type': 'DELETED', 'object': obj}
            self.log.append((rv, item))
            self.owner._rv_committed = max(self.owner._rv_committed, rv)
            stamped.append(item)
        await super().put(*stamped)


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
       ?timeoutSeconds= is honoured (kmock ignores it and streams forever).
    3. Failed JSON-patch `test` op -> 422 (kmock: 500); kopf relies on 422.
    4. The sync kubernetes client sends ?watch=True (capital T); kmock only knows
       watch=true and serves a plain LIST.  Normalised here.
    5. CREATE answers 201 (kmock: 200); CustomObjectsApi.create_* returns None on 200.
    6. LIST responses carry apiVersion/kind (kubectl refuses lists without 'kind').
    """

    def __attrs_post_init__(self):
        super().__attrs_post_init__()
        self._rv_counter = itertools.count(1000)
        self._rv_committed = 999
        self._buses = collections.defaultdict(lambda: _RecordingBus(self))

    async def __call__(self, raw_request):
        if raw_request.query.get('watch') in ('True', '1'):
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch='true'))
        response = await super().__call__(raw_request)
        if raw_request.method == 'POST' and response.status == 200 and not response.prepared:
            response.set_status(201)
        return response

    async def _handle(self, request):
        # NB: no awaits between the rv assignment and kmock's lock acquisition => rv order == lock order.
        token = None
        if request.resource is not None and request.action in (kmock.action.CREATE, kmock.action.UPDATE,
                                                               kmock.action.DELETE):
            rv = next(self._rv_counter)
            token = _CURRENT_RV.set(rv)
            if request.action == kmock.action.CREATE and isinstance(request.data, dict):
                meta = request.data.setdefault('metadata', {})
                meta.setdefault('uid', str(uuid.uuid4()))
                if not meta.get('name') and meta.get('generateName'):  # kopf names its Events this way
                    meta['name'] = meta['generateName'] + uuid.uuid4().hex[:5]
                meta.setdefault('creationTimestamp',
                                datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ'))
                meta['resourceVersion'] = str(rv)
            elif request.action == kmock.action.UPDATE and isinstance(request.data, dict):
                if request.data.get('metadata') is None:
                    request.data['metadata'] = {}
                request.data['metadata']['resourceVersion'] = str(rv)
            elif request.action == kmock.action.UPDATE and isinstance(request.data, list):
                request.data.append({'op': 'replace', 'path': '/metadata/resourceVersion', 'value': str(rv)})
        try:
            return await super()._handle(request)
        except jsonpatch.JsonPatchException as e:
            raise kmock.KubernetesError(status=422, reason='Invalid', message=str(e))
        finally:
            if token is not None:   # aiohttp reuses one task per keep-alive connection
                _CURRENT_RV.reset(token)

    def _matches(self, request, event) -> bool:
        meta = event.get('object', {}).get('metadata', {})
        return self._KubernetesEmulator__check(request, request.resource, meta.get('namespace'),
                                               meta.get('name'), strict=False)

    async def _serve_list(self, request):
        if not any(res == request.resource for res in self._get_resources()):
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            objs = self._KubernetesEmulator__get_objs(request, strict=False)
            items = [obj.raw for obj in objs if not obj.deleted]
            rv = self._rv_committed
        res = request.resource
        info = self.resources[res] if res in self.resources else None
        kind = (info.kind if info is not None and info.kind else res.plural.capitalize()) + 'List'
        api_version = f'{res.group}/{res.version}' if res.group else res.version
        return {'apiVersion': api_version, 'kind': kind,  # kubectl needs these
                'metadata': {'resourceVersion': str(rv)}, 'items': items}

    async def _serve_watch(self, request):
        yield b''  # send the headers now
        since = request.params.get('resourceVersion')
        timeout = request.params.get('timeoutSeconds')
        deadline = None if not timeout else asyncio.get_running_loop().time() + float(timeout)
        bus = self._buses[request.resource]
        async with self._lock:  # mark + snapshot atomically (kmock publishes under this lock)
            marker = await bus.mark()
            if since and since.isdigit() and int(since) > 0:
                replay = [ev for rv, ev in bus.log if rv > int(since) and self._matches(request, ev)]
            else:
                objs = self._KubernetesEmulator__get_objs(request, strict=False)
                replay = [{'type': 'ADDED', 'object': obj.raw} for obj in objs if not obj.deleted]
        try:
            for event in replay:
                yield event
            stream = bus.stream(since=marker).__aiter__()
            while True:
                remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    event = await asyncio.wait_for(stream.__anext__(), remaining)
                except TimeoutError:
                    return
                if self._matches(request, event):
                    yield event
        finally:
            await bus.unmark(marker)


def register_crd(k: kmock.KubernetesEmulator) -> None:
    k.resources.load_bundled()  # builtins: v1/pods, batch/v1/jobs, v1/events, v1/secrets, ...
    k.resources[CRD_KEY] = kmock.ResourceInfo(
        kind='PnasEval', singular='pnaseval', namespaced=True,
        verbs={'get', 'list', 'watch', 'create', 'patch', 'update', 'delete'},
        subresources={'status'},
    )


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
        self._thread = threading.Thread(target=self._run, name='kmock', daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError('kmock did not start')
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
        return f'http://127.0.0.1:{self.port}'

    def call(self, coro_or_fn, timeout: float = 10):
        """Run something on the emulator's loop (the emulator is not thread-safe)."""
        if asyncio.iscoroutine(coro_or_fn):
            return asyncio.run_coroutine_threadsafe(coro_or_fn, self.loop).result(timeout)

        async def wrap():
            return coro_or_fn()
        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def write_kubeconfig(self) -> str:
        cfg = {
            'apiVersion': 'v1', 'kind': 'Config',
            'clusters': [{'name': 'kmock', 'cluster': {'server': self.url}}],
            'users': [{'name': 'kmock', 'user': {'token': 'dummy'}}],
            'contexts': [{'name': 'kmock', 'context': {'cluster': 'kmock', 'user': 'kmock',
                                                       'namespace': 'default'}}],
            'current-context': 'kmock',
        }
        fd, path = tempfile.mkstemp(prefix='kmock-kubeconfig-', suffix='.yaml')
        with os.fdopen(fd, 'w') as f:
            yaml.safe_dump(cfg, f)
        return path
