"""10. The fidelity reference's cost: PyTorch fp32 per image against the deployed backend, and the share of a
full evaluation's time that the default sample adds.

No new measurement: row 1 already times PyTorch eager (the `pytorch` backend's computation: the timm model in
fp32 under inference_mode, on the same inputs) and onnxruntime per batch size, each in its own process; this
row reads those figures (or measures them when row 1 did not run). The reference runs at the largest batch
size of the spec (what the planner gives it), so its cost per image is PyTorch's at the largest batch size
here. The default sample is what the planner draws for the defaults (16 shards, `fidelity.images` 500, no
limit: ImageNet val's 50,000 assumed), whole shards. The share is in device-seconds: the sample's images at
the reference's cost, over 50,000 images at each of the row's batch sizes at onnxruntime's cost. On a cluster
the reference runs beside the inference Jobs, so the wall-clock time it adds is smaller when nodes are free.
"""

from __future__ import annotations

from benchmarks import backends
from benchmarks.common import Context, Row

ROWS = ("10",)  # the row of results.md this module measures
FULL_SET = 50_000  # ImageNet val, what the planner assumes without a limit


def default_sample() -> int:
    """Images in the sample the planner draws for the spec's defaults."""
    from pnas_jobs import plan
    from pnas_jobs.spec import DatasetSpec, FidelitySpec

    shards, images = DatasetSpec.model_fields["shards"].default, FidelitySpec.model_fields["images"].default
    return len(plan.sample_shards(shards, images, 0)) * (FULL_SET // shards)


def run(ctx: Context) -> list[Row]:
    if "cpu_backends" not in ctx.facts:
        backends.run(ctx)  # row 1's figures (its rows are reported by its own module)
    ort, torch = ctx.facts["cpu_backends"]["onnxruntime"], ctx.facts["cpu_backends"]["torch"]
    sizes = ctx.sizes
    reference_bs = max(sizes.batch_sizes)
    reference_s, deployed_s = 1.0 / torch[reference_bs], 1.0 / ort[reference_bs]
    ratio = reference_s / deployed_s
    sample = default_sample()
    evaluation_s = FULL_SET * sum(1.0 / ort[bs] for bs in sizes.batch_sizes)
    share = sample * reference_s / evaluation_s
    notes = [
        f"Per image: PyTorch fp32 {reference_s * 1000:.1f} ms, onnxruntime {deployed_s * 1000:.1f} ms at bs{reference_bs} "
        f"({sizes.model}, CPU, row 1's measurements).",
        f"Default sample: {sample:,} images (16 shards of 50,000 assumed: 1 whole shard holds the 500 asked for); "
        f"{sample:,} x {reference_s:.3g} s = {sample * reference_s:,.0f} s against a full evaluation of 50,000 images at "
        f"batch sizes {list(sizes.batch_sizes)} with onnxruntime = {evaluation_s:,.0f} s: {share:.1%} more device time.",
    ]
    return [
        Row(
            "10",
            f"Fidelity reference: PyTorch fp32 cost per image vs the deployed backend (onnxruntime CPU, {sizes.model}), "
            "and what the default sample adds",
            f"{reference_s * 1000:.1f} ms/img (bs{reference_bs}); default sample adds {share:.1%} of a full evaluation",
            f"{deployed_s * 1000:.1f} ms/img (onnxruntime, bs{reference_bs})",
            ratio,
            f"{ratio:.2f}x the cost per image",
            "none (context: what spec.fidelity costs)",
            None,
            notes,
        )
    ]
