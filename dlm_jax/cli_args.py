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
    "eval": "python -m dlm_jax eval --workdir DIR [--evals NAME,...] [--batches N] [--ema] [--seed S]",
}
FLAG_HELP = {
    "train": ("config", "workdir", "steps", "sampler", "num_samples", "out", "seed", "batches", "evals", "ema"),
    "sample": ("workdir", "steps", "sampler", "num_samples", "out", "seed", "ema"),
    "eval": ("workdir", "evals", "batches", "seed", "ema"),
}


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


def parse_error_line(error: Exception, argv: list[str]) -> str:
    """One line for a flag-parsing failure (unknown flag or config key, bad preset, missing file)."""
    text = str(error)
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
    if "No such file" in text or "Errno 2" in text:
        path = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
        path = path or next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config"), "?")
        return f"--config: {path!r}; expected an existing config file, e.g. configs/demo.py[:preset]"
    return lines[-1] if lines else type(error).__name__


def parse_steps(values) -> list[int]:
    out = []
    for v in values:
        try:
            out.append(int(v))
        except (TypeError, ValueError):
            checks.fail("--steps", ",".join(map(str, values)), "comma-separated ints >= 1, e.g. 8,32,128")
    for v in out:
        checks.check_int("--steps", v, min=1)
    return out


def check_args(command: str, flag_values) -> None:
    """Every argument checked before any work starts (one line each)."""
    if flag_values.num_samples is not None:
        checks.check_int("--num-samples", flag_values.num_samples, min=1)
    if flag_values.batches is not None:
        checks.check_int("--batches", flag_values.batches, min=1)
    if flag_values.steps is not None:
        parse_steps(flag_values.steps)
    out = flag_values.out
    if out is not None:
        if os.path.isdir(out):
            checks.fail("--out", out, "a file path for the samples (JSONL), not a directory")
        parent = os.path.dirname(os.path.abspath(out))
        existing = parent
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
            checks.fail("--out", out, "a path in a writable directory")
    if command != "train" and not flag_values.workdir:
        checks.fail("--workdir", None, f"the run directory for `{command}`")


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
