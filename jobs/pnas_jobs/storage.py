"""The one door to storage: local folders and S3/MinIO buckets, addressed by URI.

`open_store("s3://bucket/prefix")` or `open_store("/some/dir")` gives a `Store` whose keys are
relative, '/'-separated paths. Writes are atomic for a reader (temporary file + rename locally; one
PUT or one completed multipart upload in S3). Credentials come from the environment only and never
appear in messages: errors name the endpoint and the object, nothing else.

Each object also has a cheap version token (`versions`: size and modification times locally, size and
ETag in S3) and can be checked against what was written (`matches`), so a re-run can tell an object
it made, unchanged, from one replaced or damaged since.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, TypeVar
from urllib.parse import urlparse

T = TypeVar("T")

ACCESS_KEY_ENV = ("MINIO_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
SECRET_KEY_ENV = ("MINIO_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
_TEMP_SUFFIX = ".pnas-tmp"


def _file_mode() -> int:
    """What open() would give a new file: 0o666 less the umask (mkstemp makes 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


class StorageError(RuntimeError):
    """A storage operation failed; the message names the endpoint and the object.

    `permanent` marks what retrying cannot fix (credentials, a missing bucket, a refused key).
    """

    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent

    def __reduce__(self):  # keeps `permanent` across processes (a decoding worker's error reaches its stage)
        return _rebuild_error, (type(self), str(self), self.permanent)


def _rebuild_error(cls: type[StorageError], message: str, permanent: bool) -> StorageError:
    error = cls.__new__(cls)
    RuntimeError.__init__(error, message)
    error.permanent = permanent
    return error


class NotFound(StorageError):
    def __init__(self, message: str):
        super().__init__(message, permanent=True)


@dataclass(frozen=True)
class StorageSettings:
    """Where S3 lives and how hard to try. Filled from `spec.storage` and the environment."""

    endpoint: str | None = None
    secure: bool = False
    region: str | None = None
    retries: int = 5  # per HTTP request (the minio SDK's urllib3 retry)
    backoff: float = 0.5  # seconds, doubled each retry, capped at backoff_max
    backoff_max: float = 8.0
    timeout: float = 60.0  # read timeout per request

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "StorageSettings":
        env = os.environ if env is None else env
        values = dict(
            endpoint=env.get("PNAS_STORAGE_ENDPOINT") or None,
            secure=env.get("PNAS_STORAGE_SECURE", "false").lower() in ("1", "true", "yes"),
            region=env.get("PNAS_STORAGE_REGION") or None,
            retries=int(env.get("PNAS_STORAGE_RETRIES", cls.retries)),
            backoff=float(env.get("PNAS_STORAGE_BACKOFF", cls.backoff)),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def environment(self) -> dict[str, str]:
        """The non-secret variables a stage process needs to reach the same storage."""
        env = {"PNAS_STORAGE_SECURE": str(self.secure).lower()}
        if self.endpoint:
            env["PNAS_STORAGE_ENDPOINT"] = self.endpoint
        if self.region:
            env["PNAS_STORAGE_REGION"] = self.region
        return env


def credentials() -> tuple[str | None, str | None]:
    access = next((os.environ[k] for k in ACCESS_KEY_ENV if os.environ.get(k)), None)
    secret = next((os.environ[k] for k in SECRET_KEY_ENV if os.environ.get(k)), None)
    return access, secret


def check_key(key: str) -> str:
    """Refuse keys that could escape the store's root."""
    if not key or key.startswith("/") or "\\" in key:
        raise StorageError(f"refused object key {key!r}: keys are relative '/'-separated paths", True)
    if any(part in ("..", ".", "") for part in key.rstrip("/").split("/")):
        raise StorageError(f"refused object key {key!r}: '..', '.' and empty segments are not allowed", True)
    return key


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class Store:
    """Interface of both stores; keys are relative to the store's root."""

    uri: str

    def exists(self, key: str) -> bool: ...
    def read_bytes(self, key: str) -> bytes: ...
    def write_bytes(self, key: str, data: bytes) -> str | None: ...
    def download(self, key: str, path: Path) -> Path: ...
    def upload(self, path: Path, key: str) -> str | None:
        """Store a file; returns the object's ETag where the server gives one (S3), else None."""

    def versions(self, prefix: str = "") -> dict[str, str]:
        """{key: version token} of every object under `prefix`: a token changes whenever the content may have."""

    def matches(self, key: str, sha256: str, size: int | None = None, etag: str | None = None) -> bool:
        """Whether the object is still the one written: its size, and its ETag or else its sha256."""

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self.versions(prefix))

    def delete(self, key: str) -> None: ...
    def child(self, prefix: str) -> "Store": ...
    def size(self, key: str) -> int: ...

    def read_text(self, key: str) -> str:
        return self.read_bytes(key).decode()

    def write_text(self, key: str, text: str) -> str | None:
        return self.write_bytes(key, text.encode())

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def fetch(self, key: str, cache_dir: Path) -> Path:
        """A local file with the object's content, downloaded into `cache_dir`."""
        return self.download(key, Path(cache_dir) / key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri})"


class LocalStore(Store):
    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def fetch(self, key: str, cache_dir: Path) -> Path:
        """The file itself: read in place, not copied."""
        return self.download(key, self._path(key))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise NotFound(f"no such file: {self._path(key)}") from None

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no such file: {self._path(key)}") from None

    def _atomic(self, key: str, write: Callable[[Path], None]) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=_TEMP_SUFFIX)
        os.close(fd)
        try:
            write(Path(temp))
            os.chmod(temp, FILE_MODE)  # readable like any file the user writes, not mkstemp's 0600
            os.replace(temp, target)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def write_bytes(self, key: str, data: bytes) -> None:
        self._atomic(key, lambda p: p.write_bytes(data))

    def upload(self, path: Path, key: str) -> None:
        if Path(path).absolute() == self._path(key):
            return
        self._atomic(key, lambda p: shutil.copyfile(path, p))

    def matches(self, key: str, sha256: str, size: int | None = None, etag: str | None = None) -> bool:
        path = self._path(key)
        try:
            if size is not None and path.stat().st_size != size:
                return False
            with open(path, "rb") as handle:
                return hashlib.file_digest(handle, "sha256").hexdigest() == sha256
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False

    def download(self, key: str, path: Path) -> Path:
        source = self._path(key)
        if not source.is_file():
            raise NotFound(f"no such file: {source}")
        path = Path(path)
        if path.absolute() != source:
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, path)
        return path

    def versions(self, prefix: str = "") -> dict[str, str]:
        """Size, mtime and ctime: a file rewritten or replaced gets a new ctime, whatever its mtime says."""
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return {prefix: _token(base.stat())}
        found = {}
        for folder, _, files in os.walk(base, followlinks=True):  # nothing when base is missing
            for name in files:
                if name.endswith(_TEMP_SUFFIX):
                    continue
                path = Path(folder, name)
                try:
                    stat = path.stat()
                except FileNotFoundError:  # removed meanwhile
                    continue
                found[path.relative_to(self.root).as_posix()] = _token(stat)
        return found

    def delete(self, key: str) -> None:
        """Remove the file, and the folders it leaves empty (as deleting an S3 object leaves no prefix)."""
        path = self._path(key)
        path.unlink(missing_ok=True)
        for folder in path.parents:
            if folder == self.root or not folder.is_relative_to(self.root):
                break
            try:
                folder.rmdir()
            except OSError:  # not empty
                break

    def child(self, prefix: str) -> "LocalStore":
        return LocalStore(self._path(prefix)) if prefix else self


def _token(stat: os.stat_result) -> str:
    return f"{stat.st_size}:{stat.st_mtime_ns}:{stat.st_ctime_ns}"


class S3Store(Store):
    def __init__(self, bucket: str, prefix: str, settings: StorageSettings, client=None):
        self.bucket, self.prefix, self.settings = bucket, prefix.strip("/"), settings
        self.uri = "s3://" + join(bucket, self.prefix)
        self.client = client or _minio_client(settings)

    def _key(self, key: str) -> str:
        return join(self.prefix, check_key(key))

    def _where(self, key: str = "") -> str:
        return f"s3://{join(self.bucket, self.prefix, key)} at {self.settings.endpoint}"

    def _call(self, what: str, key: str, operation: Callable[[], T]) -> T:
        """Run one SDK call, turning its failures into one-line messages without secrets."""
        from minio.error import S3Error, ServerError
        from urllib3.exceptions import HTTPError

        try:
            return operation()
        except S3Error as error:
            code = error.code
            if code in ("NoSuchKey", "NoSuchObject"):
                raise NotFound(f"{what}: no such object {self._where(key)}") from None
            if code == "NoSuchBucket":
                raise StorageError(
                    f"{what}: bucket '{self.bucket}' does not exist at {self.settings.endpoint}; create it first",
                    True,
                ) from None
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken"):
                raise StorageError(
                    f"{what}: access denied ({code}) for {self._where(key)}: check the access and secret keys "
                    f"({'/'.join(ACCESS_KEY_ENV)}, {'/'.join(SECRET_KEY_ENV)} or the credentials Secret)",
                    True,
                ) from None
            raise StorageError(f"{what}: {code} for {self._where(key)}: {error.message}") from None
        except ServerError as error:
            raise StorageError(
                f"{what}: server error {error.status_code} for {self._where(key)} after retries"
            ) from None
        except (HTTPError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            raise StorageError(
                f"{what}: cannot reach {self.settings.endpoint} for {self._where(key)} after "
                f"{self.settings.retries} retries ({type(reason).__name__})"
            ) from None

    def exists(self, key: str) -> bool:
        try:
            self._call("stat", key, lambda: self.client.stat_object(self.bucket, self._key(key)))
            return True
        except NotFound:
            return False

    def size(self, key: str) -> int:
        return self._call("stat", key, lambda: self.client.stat_object(self.bucket, self._key(key))).size

    def read_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(self.bucket, self._key(key))
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._call("read", key, read)

    def write_bytes(self, key: str, data: bytes) -> str | None:
        import io

        return self._call(
            "write", key, lambda: self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))
        ).etag

    def upload(self, path: Path, key: str) -> str | None:
        # fput_object switches to multipart for large files and retries each part.
        return self._call("upload", key, lambda: self.client.fput_object(self.bucket, self._key(key), str(path))).etag

    def matches(self, key: str, sha256: str, size: int | None = None, etag: str | None = None) -> bool:
        """The ETag is the server's own content checksum: comparing it reads nothing back."""
        try:
            stat = self._call("stat", key, lambda: self.client.stat_object(self.bucket, self._key(key)))
        except NotFound:
            return False
        if size is not None and stat.size != size:
            return False
        if etag:
            return stat.etag == etag
        return hashlib.sha256(self.read_bytes(key)).hexdigest() == sha256

    def download(self, key: str, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # fget_object streams into a temporary file and renames it when complete.
        self._call("download", key, lambda: self.client.fget_object(self.bucket, self._key(key), str(path)))
        return path

    def versions(self, prefix: str = "") -> dict[str, str]:
        """Size and ETag (the server's checksum of the content), from the listing itself."""
        full = join(self.prefix, check_key(prefix) if prefix else "")
        start = len(self.prefix) + 1 if self.prefix else 0

        def listing() -> dict[str, str]:
            objects = self.client.list_objects(self.bucket, prefix=full + "/" if full else None, recursive=True)
            return {o.object_name[start:]: f"{o.size}:{o.etag}" for o in objects if not o.is_dir}

        found = self._call("list", prefix, listing)
        if prefix and not found and self.exists(prefix):
            stat = self._call("stat", prefix, lambda: self.client.stat_object(self.bucket, self._key(prefix)))
            return {prefix: f"{stat.size}:{stat.etag}"}
        return found

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.client.remove_object(self.bucket, self._key(key)))

    def child(self, prefix: str) -> "S3Store":
        if not prefix:
            return self
        return S3Store(self.bucket, join(self.prefix, check_key(prefix)), self.settings, self.client)


def _minio_client(settings: StorageSettings):
    import urllib3
    from minio import Minio

    if not settings.endpoint:
        raise StorageError(
            "s3:// storage needs an endpoint: set spec.storage.endpoint (host:port) or PNAS_STORAGE_ENDPOINT", True
        )
    if "://" in settings.endpoint or "/" in settings.endpoint:
        raise StorageError(
            f"spec.storage.endpoint (or PNAS_STORAGE_ENDPOINT) is {settings.endpoint!r}: give host:port only, "
            "without a scheme or path (spec.storage.secure: true for https)",
            True,
        )
    access, secret = credentials()
    retry = urllib3.Retry(
        total=settings.retries,
        backoff_factor=settings.backoff,
        backoff_max=settings.backoff_max,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=None,  # every verb: S3 PUTs of one part are idempotent
        raise_on_status=False,
    )
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(10.0, settings.timeout), read=settings.timeout),
        retries=retry,
        maxsize=16,
    )
    return Minio(
        settings.endpoint,
        access_key=access,
        secret_key=secret,
        secure=settings.secure,
        region=settings.region,
        http_client=http,
    )


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def open_store(uri: str | Path, settings: StorageSettings | None = None) -> Store:
    """A store rooted at a local path, a file:// URI or s3://bucket/prefix."""
    text = str(uri)
    if is_s3(text):
        parsed = urlparse(text)
        if not parsed.netloc:
            raise StorageError(f"{text!r} names no bucket: expected s3://bucket/prefix", True)
        return S3Store(parsed.netloc, parsed.path, settings or StorageSettings.from_env())
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise StorageError(f"unsupported storage URI {text!r}: use a local path, file:// or s3://", True)
    return LocalStore(Path(text))


def open_object(uri: str | Path, settings: StorageSettings | None = None) -> tuple[Store, str]:
    """The store holding one object, and the object's key in it (for a labels file or weights)."""
    text = str(uri).rstrip("/")
    if is_s3(text) and "/" not in text[len("s3://") :]:
        raise StorageError(f"{uri!r} names a bucket, not an object", True)
    parent, _, name = text.rpartition("/")
    return open_store(parent or ".", settings), name
