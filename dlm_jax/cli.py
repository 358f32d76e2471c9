"""Command line: ``python -m dlm_jax {train,sample,eval} [flags]``.

    python -m dlm_jax train                                  # the offline demo (configs/demo.py)
    python -m dlm_jax train --config configs/demo.py:tiny --workdir runs/t --config.train.steps=50
    python -m dlm_jax sample --workdir runs/demo --steps 8,32 --sampler remdm_loop --num-samples 4
    python -m dlm_jax eval --workdir runs/demo
    python -m dlm_jax eval --workdir runs/demo --steps 8,32 --metrics gen_ppl,entropy --judge run:runs/ar_judge

Thin by design: parse flags, call one function of ``dlm_jax.train`` / ``dlm_jax.runs`` /
``dlm_jax.eval``; it knows no model, method or metric by name. ``train`` resumes when the
workdir holds a checkpoint, then prints samples at ``config.sample.steps`` and the validation
metrics. Config overrides use ml_collections flags (``--config.<key>=<value>``).
"""

from __future__ import annotations

import json
import os
import re
import sys

from absl import flags, logging
from ml_collections import config_flags

from dlm_jax import cli_args

COMMANDS = ("train", "sample", "eval", "export", "import", "check-parity", "translate")
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(_REPO_ROOT, "configs", "demo.py")

_CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Config file[:preset].", lock_config=False)
flags.DEFINE_string("workdir", None, "Run directory (train: default config.workdir).")
flags.DEFINE_list("steps", None, "sample: comma-separated step counts (default config.sample.steps).")
flags.DEFINE_string("sampler", None, "sample: sampler name (default config.sample.sampler).")
flags.DEFINE_integer("num_samples", None, "sample: sequences per step count.")
flags.DEFINE_string("out", None, "sample: write samples to this JSONL file; eval --metrics: the JSON result; "
                    "translate: the hypotheses file (default stdout).")
flags.DEFINE_integer("seed", 0, "sample/eval: PRNG seed.")
flags.DEFINE_integer("batches", None, "eval: batches per evaluator (default: each evaluator's own).")
flags.DEFINE_list("evals", None, "eval: names of config.evals entries to run (default: all).")
flags.DEFINE_list("metrics", None, "eval: sample and score these quality metrics (dlm_jax.eval.quality_run).")
flags.DEFINE_string("judge", None, "eval --metrics: the judge LM, run:<workdir> (an AR run) or hf:<folder> (GPT-2).")
flags.DEFINE_integer("batch_size", 16, "eval --metrics: samples per vmapped call (results do not depend on it); "
                     "translate: sources per batch.")
flags.DEFINE_bool("ema", None, "sample/eval/export: use the EMA params (default config.sample.use_ema).")
flags.DEFINE_string("format", None, "export/import/check-parity: checkpoint layout (dlm_jax, mdlm, fsdfm, llada).")
flags.DEFINE_string("from", None, "import: the checkpoint file or directory to import.")
flags.DEFINE_integer("step", None, "export: the checkpoint step (default: the newest).")
flags.DEFINE_string("max_shard_size", "5GB", "export: split safetensors above this size (e.g. 500MB).")
flags.DEFINE_string("dtype", "float32", "export: tensor dtype of the PyTorch layouts (float32, bfloat16).")
flags.DEFINE_string("model", None, "import fsdfm: teacher | student | student_ema.")
flags.DEFINE_string("source", None, "import fsdfm: the source the checkpoint was trained with (mask | uniform).")
flags.DEFINE_integer("heads", None, "import: attention heads when the checkpoint does not record them.")
flags.DEFINE_integer("max_len", None, "import: the model's longest sequence.")
flags.DEFINE_integer("seq_len", None, "import: the run's sequence length (default min(max_len, 1024)).")
flags.DEFINE_string("data", None, "import: config.data overrides as a JSON object (e.g. files, tokenizer_path).")
flags.DEFINE_string("distributed", "off", "import: off | auto (a TPU pod / SLURM job: every host runs the same "
                    "command and reads only its shards) | explicit (with --coordinator etc.).")
flags.DEFINE_string("coordinator", None, "import --distributed explicit: HOST:PORT of process 0.")
flags.DEFINE_integer("num_processes", None, "import --distributed explicit: processes in the job.")
flags.DEFINE_integer("process_id", None, "import --distributed explicit: this process's index.")
flags.DEFINE_string("exported", None, "check-parity: an exported checkpoint to compare instead of exporting anew.")
flags.DEFINE_integer("num_sequences", 4, "check-parity: random sequences to compare.")
flags.DEFINE_integer("length", None, "check-parity: their length (default data.seq_len).")
flags.DEFINE_string("inputs", "random", "check-parity: random (ids over every input id) | text (the run's "
                    "validation text, masked at a random rate per sequence).")
flags.DEFINE_string("input", None, "translate: source sentences, one per line (default: stdin).")
FLAGS = flags.FLAGS


def _normalise(argv: list[str]) -> list[str]:
    """Accept ``--num-samples`` for ``--num_samples`` (flag names only, never values)."""
    return [re.sub(r"^--([a-z0-9-]+)", lambda m: "--" + m.group(1).replace("-", "_"), a)
            if a.startswith("--") and not a.startswith("--config") else a for a in argv]


def _print_samples(run, steps_list, sampler, num_samples, seed, out):
    from dlm_jax.eval import generate as gen

    cli_args.check_sampler_family(sampler, run)
    print(f"{run.workdir}: checkpoint step {run.step}")
    rows = []
    for steps in cli_args.parse_steps(steps_list):
        tokens, info = gen.generate(run, steps=int(steps), sampler=sampler, num_samples=num_samples, seed=seed)
        texts = gen.decode(run, tokens)
        name = sampler or run.config.sample.get("sampler") or "default"
        print(f"\n=== {name}, {steps} steps: NFE {int(info['nfe'].max())}, "
              f"{info['seconds'] * 1e3:.0f} ms for {len(texts)} samples ===")
        score = gen.exact_score(run, tokens)
        if score is not None:
            print(f"exact log p*(x)/L under the true chain: {score['log_prob_per_token']:.4f} "
                  f"± {score['stderr']:.4f} (exact samples: {score['exact_per_token']:.4f})")
        for i, text in enumerate(texts):
            print(f"--- sample {i} ---\n{text[:600]}")
            rows.append({"sampler": name, "steps": int(steps), "nfe": int(info["nfe"].max()),
                         "text": text, "tokens": tokens[i].tolist(), "step": run.step})
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        print(f"\nwrote {len(rows)} samples to {out}")


def _print_eval(run, batches, seed, names=None):
    """Run the run's ``config.evals`` (all, or ``names``) on this process and print them."""
    import jax

    from dlm_jax.eval import evaluators
    from dlm_jax.train import loop

    evals = evaluators.build_evaluators(run.config)
    if names:
        for name in names:
            if name not in evals:
                raise ValueError(f"--evals: {name!r}; expected names from config.evals {tuple(evals)}")
    ctx = evaluators.plain_context(
        run.config, run.method, lambda split: loop.grain_data(run.config, split=split, process_index=0,
                                                              process_count=1, workdir=run.workdir),
        jax.random.key(seed + 1), mesh=run.mesh, workdir=run.workdir)
    metrics = evaluators.run_evaluators(evals, ctx, lambda block: run.params, names=names, batches=batches)
    units = {"nelbo": " nats/token", "bits_per_token": " bits/token", "unigram_ce": " nats/token",
             "unigram_bits": " bits/token"}
    for name, (block, _) in evals.items():
        shown = ", ".join(f"{k.split('/', 1)[1]} {v:.4f}{units.get(k.split('/', 1)[1], '')}"
                          for k, v in metrics.items()
                          if k.startswith(name + "/") and not k.endswith(("_sum", "num_batches", "num_tokens")))
        if shown:
            count = metrics.get(f"{name}/num_tokens")
            print(f"\n{block['split']} [{name}] (step {run.step}{f', {int(count)} tokens' if count else ''}): {shown}")
    return metrics


def _run(command: str) -> int:
    """Run ``command`` with the parsed flags; returns the exit code."""
    cli_args.check_args(command, FLAGS)
    if not FLAGS["verbosity"].present:  # Orbax/absl INFO lines drown the progress bar
        logging.set_verbosity(logging.ERROR)
    from dlm_jax import runs

    if command == "train":
        from dlm_jax.train import loop

        config = _CONFIG.value
        workdir = FLAGS.workdir or config.get("workdir", None) or "runs/default"
        cli_args.check_train_workdir(workdir)
        cli_args.check_train_config(config, FLAGS)
        result = loop.train(config, workdir)
        if result["preempted"]:
            return cli_args.EXIT_PREEMPTED
        import jax

        if "sample" not in config:
            return 0
        if jax.process_count() > 1:  # sampling below is single-process; never leave peers waiting
            if jax.process_index() == 0:
                print(f"trained {workdir}; sample with `python -m dlm_jax sample --workdir {workdir}`")
            return 0
        run = runs.load_run(workdir, use_ema=FLAGS.ema)
        steps = FLAGS.steps or list(config.sample.get("steps", (8,)))
        _print_samples(run, steps, FLAGS.sampler, FLAGS.num_samples or config.sample.get("num_samples", 2),
                       FLAGS.seed, FLAGS.out)
        _print_eval(run, FLAGS.batches, FLAGS.seed, FLAGS.evals)
        return 0

    if command in ("export", "import", "check-parity"):
        return _interop(command)
    if command == "translate":
        from dlm_jax.cli_translate import translate_command

        translate_command(FLAGS.workdir, FLAGS.steps or ["5"], sampler=FLAGS.sampler, input_path=FLAGS.input,
                          out=FLAGS.out, seed=FLAGS.seed, ema=FLAGS.ema, batch_size=FLAGS.batch_size)
        return 0
    if command == "eval" and FLAGS.metrics:
        return _quality()
    run = runs.load_run(FLAGS.workdir, use_ema=FLAGS.ema)
    if command == "sample":
        steps = FLAGS.steps or list(run.config.get("sample", {}).get("steps", (8,)))
        _print_samples(run, steps, FLAGS.sampler, FLAGS.num_samples or 4, FLAGS.seed, FLAGS.out)
    else:
        _print_eval(run, FLAGS.batches, FLAGS.seed, FLAGS.evals)
    return 0


def _quality() -> int:
    """``eval --metrics``: ``dlm_jax.eval.quality_run`` checks the request, samples, scores and writes."""
    from dlm_jax import runs
    from dlm_jax.eval import quality_run

    num_samples = FLAGS.num_samples or 16
    quality_run.check_request(FLAGS.metrics, FLAGS.judge, num_samples)
    run = runs.load_run(FLAGS.workdir, use_ema=FLAGS.ema)
    cli_args.check_sampler_family(FLAGS.sampler, run)
    steps = cli_args.parse_steps(FLAGS.steps or list(run.config.get("sample", {}).get("steps", (8,))))
    out = FLAGS.out or os.path.join(FLAGS.workdir, "quality", f"{FLAGS.sampler or 'default'}.json")
    result = quality_run.run_quality(run, steps_list=steps, sampler=FLAGS.sampler, metrics=FLAGS.metrics,
                                     judge=FLAGS.judge, num_samples=num_samples, seed=FLAGS.seed,
                                     batch_size=FLAGS.batch_size, out=out)
    print("\n".join(quality_run.summary_lines(result)))
    print(f"\nwrote {out} and {result.get('plot')}")
    return 0


def _interop(command: str) -> int:
    """``export`` / ``import`` / ``check-parity``: ``dlm_jax.export.commands`` does the work."""
    from dlm_jax.export import commands

    if command == "export":
        commands.export_command(FLAGS.workdir, FLAGS.format, FLAGS.out, bool(FLAGS.ema), step=FLAGS.step,
                                max_shard_size=FLAGS.max_shard_size, dtype=FLAGS.dtype)
        return 0
    if command == "import":
        commands.import_command(FLAGS["from"].value, FLAGS.format, FLAGS.workdir, model=FLAGS.model,
                                source=FLAGS.source, heads=FLAGS.heads, max_len=FLAGS.max_len, seq_len=FLAGS.seq_len,
                                data=FLAGS.data, seed=FLAGS.seed if FLAGS["seed"].present else None,
                                distributed=FLAGS.distributed, coordinator=FLAGS.coordinator,
                                num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
        return 0
    result = commands.parity_command(FLAGS.workdir, FLAGS.format, FLAGS.exported, bool(FLAGS.ema),
                                     num_sequences=FLAGS.num_sequences, length=FLAGS.length, seed=FLAGS.seed,
                                     inputs=FLAGS.inputs)
    return 0 if result.get("passes") else 1


def _drop_orphaned_read_callbacks() -> None:
    """When restoring a damaged checkpoint fails, TensorStore reads still in flight finish later
    against Orbax's already closed asyncio loop, and each prints ``RuntimeError: Event loop is
    closed`` through ``sys.unraisablehook`` (nobody awaits them: harmless). Drop exactly those, so
    the fallback to the previous checkpoint reads as its one warning."""
    default = sys.unraisablehook

    def hook(unraisable):
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            return
        default(unraisable)

    sys.unraisablehook = hook


def _fail(line: str) -> None:
    print(f"error: {line}", file=sys.stderr)
    sys.exit(cli_args.EXIT_BAD_INPUT)


def main(argv: list[str] | None = None) -> None:
    """Parse, check, run. Bad input (a parse error, a flag of another command, a bad value) is one
    line on stderr and exit status 2, before any work starts (DLM_JAX_TRACEBACK=1 shows the trace);
    ``-h``/``--help`` lists the command's flags, configs and presets and exits 0."""
    argv = _normalise(list(sys.argv if argv is None else argv))
    command = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else None
    if any(a in ("-h", "--help", "-help", "--helpshort") for a in argv[1:]):
        print(cli_args.help_text(command, FLAGS))
        sys.exit(0)
    if len(argv) == 1:
        print(cli_args.help_text(None, FLAGS))
    if command not in COMMANDS:
        _fail(f"command: {command!r}; expected one of {COMMANDS} (see --help)")
    try:
        rest = FLAGS(argv)
        if command == "train":
            _CONFIG.value.keys()  # the config file and its overrides load (or fail) here
    except Exception as e:  # noqa: BLE001 - absl/ml_collections parse errors of every kind
        if os.environ.get("DLM_JAX_TRACEBACK"):
            raise
        _fail(cli_args.parse_error_line(e, argv))
    if len(rest) > 2:
        _fail(f"arguments: {rest[2:]}; expected only flags after `{command}` (see --help)")
    _drop_orphaned_read_callbacks()
    try:
        cli_args.check_flags_of(command, argv)
        code = _run(command)
    except ValueError as e:
        if os.environ.get("DLM_JAX_TRACEBACK"):
            raise
        _fail(str(e).splitlines()[0] if str(e) else type(e).__name__)
    sys.exit(code)
