"""`pnas-eval`: the stages (what the Jobs run), the local runner, the CRD writer and the demo.

Every sub-command is a pydantic model: the stages' parameter models (params.py) and the commands
below; pydantic-settings turns them into the command line, so a parameter is declared once. Other
packages add commands through the `pnas_eval.commands` entry point group (the operator package adds
`plan`, the Jobs it would create), so this package never imports them.
"""

from __future__ import annotations

import errno
import importlib
import logging
import signal
import sys
import threading
import traceback
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_settings import BaseSettings, CliApp, CliPositionalArg, CliSubCommand, SettingsConfigDict, get_subcommand
from pydantic_settings import SettingsError

from pnas_jobs import logs
from pnas_jobs.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_RETRY, UserError
from pnas_jobs.params import STAGES, StageParams
from pnas_jobs.spec import SpecError
from pnas_jobs.storage import StorageError

log = logging.getLogger("pnas-eval")
PLUGINS = "pnas_eval.commands"


class Command(BaseModel):
    """A sub-command that is not a stage: `execute()` returns the exit code."""

    model_config = ConfigDict(extra="forbid")

    def execute(self) -> int:
        raise NotImplementedError


class RunCommand(Command):
    """Evaluate a PnasEval manifest on this machine."""

    spec: CliPositionalArg[str] = Field(..., description="PnasEval YAML (what kubectl apply takes)")
    local: bool = Field(False, description="run the stages here as processes (the only mode of this command)")
    workdir: str = Field("runs", description="scratch and logs; storage root when spec.storage.uri is unset")
    workers: int = Field(0, ge=0, description="processes at once (default: the CPU count)")
    force: bool = Field(False, description="recompute every stage")
    quiet: bool = Field(False, description="no progress bar")

    def execute(self) -> int:
        from pnas_jobs import local
        from pnas_jobs.spec import load_manifest

        if not self.local:
            raise UserError(
                "`pnas-eval run` runs on this machine only with --local; on a cluster, `kubectl apply -f` the manifest"
            )
        pnaseval = load_manifest(self.spec)
        return local.evaluate(pnaseval, Path(self.workdir), self.workers, force=self.force, progress=not self.quiet)


class CrdCommand(Command):
    """Print the PnasEval CRD generated from the spec model, or write or check files."""

    write: list[str] = Field(default_factory=list, description="write it to these files")
    check: list[str] = Field(default_factory=list, description="fail if these files differ from it")

    def execute(self) -> int:
        from pnas_jobs import crd

        text = crd.render()
        if self.check:
            stale = [p for p in self.check if not Path(p).is_file() or Path(p).read_text() != text]
            if stale:
                raise UserError(f"{', '.join(stale)} out of date: run `pnas-eval crd --write {','.join(self.check)}`")
            return EXIT_OK
        for path in self.write:
            Path(path).write_text(text)
            print(f"wrote {path}", file=sys.stderr)
        if not self.write:
            sys.stdout.write(text)
        return EXIT_OK


class DemoCommand(Command):
    """Generate the sample images and weights a manifest names, then evaluate it here."""

    spec: CliPositionalArg[str] = Field("examples/local.yaml", description="PnasEval YAML")
    images: int = Field(48, ge=1, description="sample images to generate")
    workers: int = Field(0, ge=0, description="processes at once (default: the CPU count)")

    def execute(self) -> int:
        from pnas_jobs import demo

        return demo.main(Path(self.spec), self.images, self.workers)


COMMANDS: dict[str, type[Command]] = {"run": RunCommand, "crd": CrdCommand, "demo": DemoCommand}


def plugin_commands() -> dict[str, type[Command]]:
    """Commands other installed packages add (entry point group `pnas_eval.commands`)."""
    found = {}
    for entry in entry_points(group=PLUGINS):
        try:
            found[entry.name] = entry.load()
        except (
            ImportError,
            AttributeError,
        ) as error:  # that package's extra is not installed here, or another version of it
            log.debug("command %s unavailable: %s", entry.name, error)
    return found


def _help(model: type[BaseModel]) -> str:
    return (model.__doc__ or "").strip().splitlines()[0]


def cli_model() -> type[BaseSettings]:
    commands = {**STAGES, **COMMANDS, **plugin_commands()}
    fields = {name: (CliSubCommand[model], Field(description=_help(model))) for name, model in commands.items()}

    class Root(BaseSettings):
        model_config = SettingsConfigDict(
            cli_prog_name="pnas-eval",
            cli_kebab_case=True,
            cli_implicit_flags=True,
            cli_exit_on_error=False,
            cli_shortcuts={"verbose": "v"},
        )

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **_):
            return (init_settings,)  # the command line only: no environment variable may change a stage's parameters

    return create_model(
        "PnasEvalCli",
        __base__=Root,
        __doc__=__doc__.splitlines()[0],
        verbose=(bool, Field(False, description="debug logs")),
        **fields,
    )


def _problems(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"][1:] if not str(p).startswith("function-"))
        flag = f"--{where.replace('_', '-')}: " if where else ""
        lines.append(flag + item["msg"].removeprefix("Value error, "))
    return "; ".join(lines)


# what no retry fixes: the user has to free space, grant access or give another path (exit 2)
FINAL_OS_ERRORS = {
    errno.EACCES: "",
    errno.EPERM: "",
    errno.EROFS: "",
    errno.ENOTDIR: "",
    errno.EISDIR: "",
    errno.EEXIST: "",
    errno.ENAMETOOLONG: "",
    errno.ENOSPC: "; free some space, then run it again to resume",
    errno.EDQUOT: "; free some space, then run it again to resume",
}


class Stopped(BaseException):
    """SIGTERM (a pod being deleted, the local runner stopping): unwind, so that temporary files go."""


def _stop(signum: int, _frame) -> None:
    raise Stopped(signum)


def _os_error(name: str, error: OSError) -> int:
    """A file system error no retry fixes (a read-only or full disk, a file where a folder belongs): one
    line naming the path, exit 2. Any other keeps its traceback and may be retried."""
    if error.errno not in FINAL_OS_ERRORS:
        return _unforeseen()
    where = f": {error.filename}" if error.filename else ""
    print(f"pnas-eval {name}: error: {error.strerror}{where}{FINAL_OS_ERRORS[error.errno]}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _unforeseen() -> int:
    """A bug or an unforeseen failure: keep the traceback, never a secret."""
    print(logs.redact(traceback.format_exc()), file=sys.stderr)
    return EXIT_RETRY


def dispatch(command: BaseModel) -> int:
    if isinstance(command, StageParams):
        module, _, function = command.ENTRY.partition(":")
        getattr(importlib.import_module(module), function)(command)
        return EXIT_OK
    return command.execute()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name = next((a for a in argv if not a.startswith("-")), "pnas-eval")
    try:
        parsed = CliApp.run(cli_model(), cli_args=argv, cli_cmd_method_name="_none")
    except ValidationError as error:
        print(f"pnas-eval {name}: error: {_problems(error)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SettingsError as error:
        print(f"pnas-eval {name}: error: {str(error).removeprefix('error parsing CLI: ')}", file=sys.stderr)
        return EXIT_BAD_INPUT
    logs.setup(parsed.verbose)
    previous = signal.signal(signal.SIGTERM, _stop) if threading.current_thread() is threading.main_thread() else None
    try:
        return dispatch(get_subcommand(parsed))
    except SpecError as error:
        print(logs.redact(str(error)), file=sys.stderr)
        return EXIT_BAD_INPUT
    except UserError as error:
        print(f"pnas-eval {name}: error: {logs.redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageError as error:
        print(f"pnas-eval {name}: storage error: {logs.redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT if error.permanent else EXIT_RETRY
    except OSError as error:
        return _os_error(name, error)
    except KeyboardInterrupt:
        print(f"pnas-eval {name}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except Stopped:
        print(f"pnas-eval {name}: stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
    except Exception:
        return _unforeseen()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
