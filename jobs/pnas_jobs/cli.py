"""`pnas-eval`: the stages (what the Jobs run), the local runner, the planner and the CRD writer."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from pnas_jobs import logs
from pnas_jobs.errors import EXIT_BAD_INPUT, EXIT_OK, EXIT_RETRY, UserError
from pnas_jobs.plan import INDEX_ENV
from pnas_jobs.spec import SpecError
from pnas_jobs.storage import StorageError

log = logging.getLogger("pnas-eval")


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _index(args) -> int:
    if args.index is not None:
        return args.index
    if os.environ.get(INDEX_ENV, "").isdigit():
        return int(os.environ[INDEX_ENV])
    raise UserError(f"no shard index: pass --index or set {INDEX_ENV}")


def cmd_convert(args) -> int:
    from pnas_jobs.stages import convert

    convert.run(
        args.run, args.model, args.weights, args.opset, args.target, args.soc_version,
        args.batch_sizes, args.parity_tolerance, args.input_size, args.force,
    )  # fmt: skip
    return EXIT_OK


def cmd_shard(args) -> int:
    from pnas_jobs.stages import shard

    overrides = json.loads(args.preprocess) if args.preprocess else None
    workers = args.workers or 1
    shard.run(
        args.run, args.images, args.labels, args.model, args.shards, _index(args),
        args.limit, overrides, workers, args.force,
    )  # fmt: skip
    return EXIT_OK


def cmd_infer(args) -> int:
    from pnas_jobs.stages import infer

    infer.run(args.run, _index(args), args.batch_size, args.backend, args.device, args.threads, args.device_id, args.force)
    return EXIT_OK


def cmd_aggregate(args) -> int:
    from pnas_jobs import metric
    from pnas_jobs.stages import aggregate

    if args.results:
        if not (args.labels and args.output):
            raise UserError("--results needs --labels and --output (the seed's vision_metric arguments)")
        table = aggregate.score_folder(args.results, args.labels, args.output)
        print(metric.seed_json(table))
        return EXIT_OK
    missing = [f"--{n.replace('_', '-')}" for n in ("run", "labels", "batch_sizes", "shards") if not getattr(args, n)]
    if missing:
        raise UserError(f"aggregate needs {', '.join(missing)} (or --results DIR --labels FILE --output FILE)")
    aggregate.run(args.run, args.labels, args.batch_sizes, args.shards, args.limit, args.summary_file)
    return EXIT_OK


def cmd_cleanup(args) -> int:
    from pnas_jobs.storage import open_store

    store = open_store(args.run)
    deleted = store.delete_prefix("")
    log.info("cleanup: deleted %d objects under %s", deleted, store.uri)
    return EXIT_OK


def cmd_run(args) -> int:
    from pnas_jobs import local
    from pnas_jobs.spec import load_manifest

    if not args.local:
        raise UserError(
            "`pnas-eval run` runs on this machine only with --local; on a cluster, `kubectl apply -f` the manifest"
        )
    manifest = load_manifest(args.spec)
    return local.run(manifest, Path(args.workdir), args.workers, force=args.force, progress=not args.quiet)


def cmd_plan(args) -> int:
    import yaml

    from pnas_jobs.plan import cluster_plan
    from pnas_jobs.spec import load_manifest
    from pnas_operator import manifests

    manifest = load_manifest(args.spec)
    plan = cluster_plan(manifest, f"{args.spec} (for a cluster)")
    settings = manifests.JobSettings(jobs_image=args.jobs_image, ascend_image=args.ascend_image)
    owner = manifests.Owner(name=manifest.metadata.name, namespace=manifest.metadata.namespace, uid="<uid>")
    jobs = manifests.jobs_for_plan(plan, manifest.spec, owner, settings)
    yaml.safe_dump_all(jobs, sys.stdout, sort_keys=False)
    return EXIT_OK


def cmd_crd(args) -> int:
    from pnas_jobs import crd

    text = crd.render()
    if args.check:
        stale = [p for p in args.check if Path(p).read_text() != text]
        if stale:
            raise UserError(f"{', '.join(stale)} out of date: run `pnas-eval crd --write {' '.join(args.check)}`")
        return EXIT_OK
    for path in args.write or []:
        Path(path).write_text(text)
        print(f"wrote {path}", file=sys.stderr)
    if not args.write:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_demo(args) -> int:
    from pnas_jobs import demo

    return demo.main(Path(args.spec), args.images, args.workers)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="pnas-eval", description=__doc__)
    top.add_argument("-v", "--verbose", action="store_true")
    sub = top.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="weights -> ONNX (-> Ascend .om), with a parity check")
    p.add_argument("--run", required=True, help="run root (path or s3://)")
    p.add_argument("--model", default="pnasnet5large")
    p.add_argument("--weights", default="timm", help="local .pth | s3://bucket/key | timm | random")
    p.add_argument("--opset", type=int, default=11)
    p.add_argument("--target", choices=("onnx", "om"), default="onnx")
    p.add_argument("--soc-version", default="Ascend310P3")
    p.add_argument("--batch-sizes", type=_ints, default=(4,), help="one .om per batch size (target om)")
    p.add_argument("--parity-tolerance", type=float, default=1e-4)
    p.add_argument("--input-size", type=int, default=None, help="default: the model's timm config")
    p.add_argument("--force", action="store_true", help="redo even if done with the same inputs")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("shard", help="images + labels -> one shard of uint8 crops and its manifest")
    p.add_argument("--run", required=True)
    p.add_argument("--images", required=True)
    p.add_argument("--labels", required=True)
    p.add_argument("--model", default="pnasnet5large", help="whose timm eval transform to apply")
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--index", type=int, default=None, help=f"default: ${INDEX_ENV}")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--preprocess", default=None, help="JSON overrides of the timm data config")
    p.add_argument("--workers", type=int, default=1, help="decoding processes")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("infer", help="one shard, one backend, one batch size -> TXT results + timing")
    p.add_argument("--run", required=True)
    p.add_argument("--index", type=int, default=None, help=f"default: ${INDEX_ENV}")
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--backend", choices=("onnxruntime", "ais_bench"), default="onnxruntime")
    p.add_argument("--device", choices=("cpu", "cuda", "tensorrt", "npu"), default="cpu")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: default)")
    p.add_argument("--device-id", type=int, default=None, help="ais_bench device (default from ASCEND_VISIBLE_DEVICES)")
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("aggregate", help="shard results -> result_bs<B>.json + report.json; or score a TXT folder")
    p.add_argument("--run")
    p.add_argument("--labels", help="val_label.txt (path or s3://)")
    p.add_argument("--batch-sizes", type=_ints)
    p.add_argument("--shards", type=int)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--summary-file", help="also write a short JSON summary here (a pod's termination log)")
    p.add_argument("--results", help="a folder of ais_bench TXT files to score instead of a run")
    p.add_argument("--output", help="with --results: the accuracy JSON to write")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("cleanup", help="delete every object of a run (what spec.cleanup does on deletion)")
    p.add_argument("--run", required=True)
    p.set_defaults(func=cmd_cleanup)

    p = sub.add_parser("run", help="evaluate a PnasEval manifest on this machine")
    p.add_argument("spec", help="PnasEval YAML (what kubectl apply takes)")
    p.add_argument("--local", action="store_true", help="run the stages here as processes")
    p.add_argument("--workdir", default="runs", help="scratch and logs; storage root when spec.storage.uri is unset")
    p.add_argument("--workers", type=int, default=0, help="processes at once (default: CPU count)")
    p.add_argument("--force", action="store_true", help="recompute every stage")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("plan", help="print the Job manifests the operator would create")
    p.add_argument("spec")
    p.add_argument("--jobs-image", default="ghcr.io/pnas-eval/jobs:0.1.0")
    p.add_argument("--ascend-image", default="ghcr.io/pnas-eval/jobs-ascend:0.1.0")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("crd", help="print the PnasEval CRD generated from the spec model")
    p.add_argument("--write", nargs="*", help="write it to these files")
    p.add_argument("--check", nargs="*", help="fail if these files differ from it")
    p.set_defaults(func=cmd_crd)

    p = sub.add_parser("demo", help="generate the sample images and weights a manifest names, then run it here")
    p.add_argument("spec", nargs="?", default="examples/local.yaml")
    p.add_argument("--images", type=int, default=48)
    p.add_argument("--workers", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.setup(args.verbose)
    try:
        return args.func(args)
    except SpecError as error:
        print(logs.redact(str(error)), file=sys.stderr)
        return EXIT_BAD_INPUT
    except UserError as error:
        print(f"pnas-eval {args.command}: error: {logs.redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except StorageError as error:
        print(f"pnas-eval {args.command}: storage error: {logs.redact(str(error))}", file=sys.stderr)
        return EXIT_BAD_INPUT if error.permanent else EXIT_RETRY
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug or an unforeseen failure: keep the traceback, never a secret
        print(logs.redact(traceback.format_exc()), file=sys.stderr)
        return EXIT_RETRY


if __name__ == "__main__":
    sys.exit(main())
