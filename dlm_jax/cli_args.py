"""The command line's help text, its flag-parsing errors as one line, and argument checks that run
before any work starts (``dlm_jax.cli`` stays the list of commands).

Exit codes: 0 done; 2 bad input (one line on stderr: ``error: <key>: <value>; expected ...``);
``EXIT_PREEMPTED`` (75, EX_TEMPFAIL) when training stopped on SIGTERM/SIGINT after saving a
checkpoint, so a scheduler can requeue the job (``launch/slurm.sbatch`` does).
"""

from __future__ import annotations

import glob
import os
import re

from dlm_jax import checks

EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 75

USAGE = {
    "train": "python -m dlm_jax train [--config configs/<name>.py[:preset]] [--workdir DIR] [--config.<key>=<value> ...]",
    "sample": "python -m dlm_jax sample --workdir DIR [--steps 8,32] [--sampler NAME] [--num-samples K] "
              "[--out FILE.jsonl] [--ema] [--seed S]",
    "eval": "python -m dlm_jax eval --workdir DIR [--evals NAME,...] [--batches N] [--ema] [--seed S]\n"
            "  python -m dlm_jax eval --workdir DIR --metrics gen_ppl,entropy,... [--judge run:DIR2|hf:FOLDER] "
            "[--steps 8,32] [--sampler NAME] [--num-samples N] [--batch-size B] [--out FILE.json]",
    "export": "python -m dlm_jax export --workdir DIR --format {dlm_jax,mdlm,fsdfm,llada} --out PATH [--ema] "
              "[--step N] [--max-shard-size 5GB]",
    "import": "python -m dlm_jax import --from PATH --format F --workdir DIR [--model teacher|student|student_ema] "
              "[--source mask|uniform] [--heads N] [--max-len N] [--seq-len N] [--data JSON] [--seed S] "
              "[--distributed auto|explicit [--coordinator HOST:PORT --num-processes N --process-id I]]",
    "translate": "python -m dlm_jax translate --workdir DIR [--steps K] [--input FILE] [--out FILE] [--sampler NAME] "
                 "[--batch-size N] [--ema] [--seed S]   (seq2seq runs)",
    "check-parity": "python -m dlm_jax check-parity --workdir DIR [--format F] [--exported PATH] [--ema] "
                    "[--num-sequences N] [--length L] [--seed S] [--inputs random|text]   (needs torch)",
}
FLAG_HELP = {
    "translate": ("workdir", "steps", "input", "out", "sampler", "batch_size", "seed", "ema"),
    "train": ("config", "workdir", "steps", "sampler", "num_samples", "out", "seed", "batches", "evals", "ema"),
    "sample": ("workdir", "steps", "sampler", "num_samples", "out", "seed", "ema"),
    "eval": ("workdir", "evals", "batches", "seed", "ema", "metrics", "judge", "steps", "sampler", "num_samples",
             "batch_size", "out"),
    "export": ("workdir", "format", "out", "ema", "step", "max_shard_size", "dtype"),
    "import": ("from", "format", "workdir", "model", "source", "heads", "max_len", "seq_len", "data", "seed",
               "distributed", "coordinator", "num_processes", "process_id"),
    "check-parity": ("workdir", "format", "exported", "ema", "num_sequences", "length", "seed", "inputs"),
}
ALL_FLAGS = tuple(sorted({f for names in FLAG_HELP.values() for f in names}))


def configs_dir() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def presets() -> list[str]:
    """``configs/<name>.py: preset, ...`` read from each file's ``PRESETS`` line (no import)."""
    out = []
    for path in sorted(glob.glob(os.path.join(configs_dir(), "*.py"))):
        match = re.search(r"^PRESETS\s*=\s*\((.*?)\)", open(path).read(), re.M | re.S)
        if match:
            names = ", ".join(re.findall(r"['\"]([^'\"]+)['\"]", match.group(1)))
            out.append(f"  configs/{os.path.basename(path)}: {names}")
    return out


def help_text(command: str | None, flag_values) -> str:
    """Usage of ``command`` (all commands when None), its flags with one line each, the configs."""
    from dlm_jax.samplers import SAMPLERS

    commands = [command] if command in USAGE else list(USAGE)
    lines = ["dlm_jax: train and sample few-step diffusion language models.", "", "usage:"]
    lines += [f"  {USAGE[c]}" for c in commands]
    names = sorted({f for c in commands for f in FLAG_HELP[c]})
    lines += ["", "flags (--num-samples and --num_samples are the same):"]
    for name in names:
        flag = flag_values[name]
        lines.append(f"  --{name.replace('_', '-'):<12} {flag.help}")
    lines += ["", "configs and presets (--config configs/<name>.py:<preset>; the first preset is the default):"]
    lines += presets()
    lines += ["", f"samplers: {', '.join(SAMPLERS)}",
              "override any config key with --config.<section>.<key>=<value> (e.g. --config.train.steps=50);",
              f"bad input exits {EXIT_BAD_INPUT} with one line; a training run stopped by SIGTERM exits "
              f"{EXIT_PREEMPTED} after saving."]
    return "\n".join(lines)


def _flag_key(name: str) -> str:
    """How a line names a flag: ``config.<key>`` for a config override, else ``--num-samples``."""
    return name if name.startswith("config.") else "--" + name.replace("_", "-")


def _flag_value(name: str, argv: list[str]):
    """The value ``argv`` gives flag ``--name`` (``--name=v`` or ``--name v``), else None."""
    for i, a in enumerate(argv):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


_WANTED = (("invalid literal for int()", "an int"), ("could not convert string to float", "a number"),
           ("Non-boolean argument", "a bool (true or false)"), ("as a ConfigDict", "a config section: set its "
           "keys one by one, --config.<section>.<key>=<value>"))


def parse_error_line(error: Exception, argv: list[str]) -> str:
    """One line, ``<key>: <value>; expected ...``, for a flag-parsing failure: unknown flag or
    config key (with the near miss), a value of the wrong type, a missing value, bad preset,
    missing config file."""
    from absl import flags

    text = str(error)
    command = argv[1] if len(argv) > 1 else None
    if isinstance(error, flags.UnrecognizedFlagError):
        near = re.search(r"Did you mean: (.*?) \?", text)
        hint = f" (did you mean --{near.group(1).split(',')[0].strip()}?)" if near else ""
        value = _flag_value(error.flagname, argv)
        return (f"--{error.flagname.replace('_', '-')}: {value!r}; expected a flag of `{command}`, "
                f"see `python -m dlm_jax {command} --help`{hint}")
    bad_value = re.match(r"^flag --([\w.-]+)=(.*?): (.*)$", text, re.S)
    if isinstance(error, flags.IllegalFlagValueError) and bad_value and bad_value.group(1) != "config":
        name, reason = bad_value.group(1), bad_value.group(3).strip().splitlines()[0]
        value = _flag_value(name, argv)
        wanted = next((w for pattern, w in _WANTED if pattern in reason), f"a valid value ({reason})")
        return f"{_flag_key(name)}: {value if value is not None else bad_value.group(2)!r}; expected {wanted}"
    missing = re.match(r"^Missing value for flag --([\w.-]+)", text)
    if missing:
        name = missing.group(1)
        return f"{_flag_key(name)}: None; expected a value, --{name}=<value>"
    unknown = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', text)
    if isinstance(error, (AttributeError, KeyError)) or unknown:
        key = unknown.group(2) if unknown else re.sub(r"[^\w.]", "", text.splitlines()[0])
        arg = next((a for a in argv if a.startswith("--config.") and re.search(rf"\.{re.escape(key)}(=|$)", a)),
                   f"--config.{key}")
        hint = f" (did you mean {unknown.group(1)!r}?)" if unknown else ""
        name, _, value = arg[2:].partition("=")
        return f"{name}: {value!r}; expected a key the config declares{hint}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):  # the config file's own one-line error, e.g. an unknown preset
        match = re.match(r"^(?:ValueError|KeyError): (.*)$", line)
        if match:
            return match.group(1)
    if any(s in text for s in ("No such file", "Errno 2", "config file", "earlier failure to load")):
        path = _flag_value("config", argv)
        return f"--config: {path!r}; expected an existing config file, e.g. configs/demo.py[:preset]"
    reason = lines[-1] if lines else type(error).__name__
    return f"arguments: {argv[2:]}; expected flags that `{command}` accepts ({reason})"


def parse_steps(values, key: str = "--steps") -> list[int]:
    """Step counts (``--steps 8,32`` or ``config.sample.steps``) as ints >= 1."""
    values = [values] if isinstance(values, (str, int)) else list(values)
    out = []
    for v in values:
        try:
            out.append(int(v))
        except (TypeError, ValueError):
            checks.fail(key, ",".join(map(str, values)), "comma-separated ints >= 1, e.g. 8,32,128")
    if not out:
        checks.fail(key, "", "comma-separated ints >= 1, e.g. 8,32,128")
    for v in out:
        checks.check_int(key, v, min=1)
    return out


def check_flags_of(command: str, argv: list[str]) -> None:
    """Refuse a flag of another command (``eval --steps 8``, ``sample --config x.py``): it would be
    silently ignored."""
    own, ours = FLAG_HELP[command], ALL_FLAGS
    for arg in argv[2:]:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0]
        base = name[2:] if name.startswith("no") and name[2:] in ours else name
        if (base in ours and base not in own) or (name.startswith("config.") and "config" not in own):
            flags = ", ".join("--" + f.replace("_", "-") for f in own)
            checks.fail(_flag_key(name), _flag_value(name, argv),
                        f"a flag of `{command}`: one of {flags} (see --help)")


def check_args(command: str, flag_values) -> None:
    """Every argument checked before any work starts (one line each)."""
    if flag_values.num_samples is not None:
        checks.check_int("--num-samples", flag_values.num_samples, min=1)
    if flag_values.batches is not None:
        checks.check_int("--batches", flag_values.batches, min=1)
    if flag_values.steps is not None:
        parse_steps(flag_values.steps)
    if flag_values.sampler is not None and command != "translate":  # translate: the method checks its own
        from dlm_jax.samplers import SAMPLERS

        checks.check_choice("--sampler", flag_values.sampler, tuple(SAMPLERS))
    if command == "eval" and not flag_values.metrics:
        for name in ("judge", "steps", "sampler", "num_samples", "out"):
            if flag_values[name].present:
                checks.fail(f"--{name.replace('_', '-')}", flag_values[name].value, "it only with --metrics: a flag "
                            "of `eval` --metrics (sample and score); plain `eval` runs config.evals")
    if flag_values.batch_size is not None:
        checks.check_int("--batch-size", flag_values.batch_size, min=1)
    out = flag_values.out if command in ("train", "sample", "eval", "translate") else None  # export writes a directory
    if command in ("export", "import") and not flag_values.format:
        checks.fail("--format", flag_values.format, "a checkpoint layout: dlm_jax, mdlm, fsdfm or llada")
    if command == "export" and not flag_values.out:
        checks.fail("--out", flag_values.out, "the path to export to")
    if command == "import" and not flag_values["from"].value:
        checks.fail("--from", flag_values["from"].value, "the checkpoint file or directory to import")
    if out is not None:
        if os.path.isdir(out):
            checks.fail("--out", out, "a file path (samples JSONL / eval result JSON), not a directory")
        parent = os.path.dirname(os.path.abspath(out))
        existing = parent
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
            checks.fail("--out", out, "a path in a writable directory")
    if command != "train" and not flag_values.workdir:
        checks.fail("--workdir", flag_values.workdir, f"the run directory for `{command}`")
    if command == "train" and flag_values["workdir"].present and not flag_values.workdir:
        checks.fail("--workdir", flag_values.workdir, "a directory path (omit --workdir for config.workdir)")


def check_train_config(config, flag_values) -> None:
    """What ``train`` reads, checked on a copy before the trainer creates the workdir: the
    trainer's own ``validate_config`` (skipped with ``mesh.distributed`` on: the device count is
    known only after ``jax.distributed.initialize``, which the trainer calls once), then the
    sampling and evaluation that follow training (``config.sample``, ``--steps``, ``--evals``)."""
    import ml_collections

    from dlm_jax.eval.evaluators import eval_blocks

    copy = ml_collections.ConfigDict(config.to_dict())
    mesh = copy.get("mesh", None)
    if not hasattr(mesh, "get") or mesh.get("distributed", "off") in ("off", None, False):
        import jax

        from dlm_jax.train import loop

        method = loop.validate_config(copy, jax.device_count(), jax.process_count())
        family = getattr(method, "samplers", ())
        if flag_values.sampler and family and flag_values.sampler not in family:
            checks.fail("--sampler", flag_values.sampler,
                        f"a sampler for method {copy.method.name!r}: one of {tuple(family)}")
    if "sample" in copy:
        sample = copy.sample
        if flag_values.steps is None:
            parse_steps(sample.get("steps", (8,)), key="sample.steps")
        if flag_values.num_samples is None:
            checks.check_int("sample.num_samples", sample.get("num_samples", 2), min=1)
    if flag_values.evals:
        names = tuple(eval_blocks(copy))
        for name in flag_values.evals:
            if name not in names:
                checks.fail("--evals", name, f"names from config.evals {names}")


def check_train_workdir(workdir: str) -> None:
    """A training workdir must be a directory we can write (or creatable)."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        checks.fail("--workdir", workdir, "a directory (it is a file)")
    existing = workdir
    while existing and not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.access(existing, os.W_OK):
        checks.fail("--workdir", workdir, "a writable directory")


def check_sampler_family(name: str | None, run) -> None:
    """A sampler must belong to the run's family: refuse before compiling what cannot run."""
    if name is None:
        return
    from dlm_jax.samplers import SAMPLERS

    checks.check_choice("--sampler", name, tuple(SAMPLERS))
    allowed = getattr(run.method, "samplers", None)
    if allowed and name not in allowed:
        checks.fail("--sampler", name, f"a sampler for method {run.config.method.name!r}: one of {tuple(allowed)}")
